"""The Celery app for scheduled refresh jobs (index compaction, gazetteer refresh, GCN refresh).

Jobs are plain idempotent functions in their worker's package; each registers a task here with
``@exclusive_task``, which holds a per-task lock in Redis so two overlapping runs cannot collide,
and hands the job this process's settings.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable

from celery import Celery

from ragstream.config import Settings
from ragstream.locks import LockTimeout, renewed_lock
from ragstream.schedule import beat_schedule
from ragstream.stores.redis import connect_sync

log = logging.getLogger(__name__)

# Modules that register tasks; the Celery worker imports them at start.
TASK_MODULES: list[str] = ["ragstream.gcn.tasks", "ragstream.nlp.refresh",
                          "ragstream.index.tasks"]


def make_app(settings: Settings) -> Celery:
    app = Celery("ragstream", include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,               # a killed worker's task is redelivered, not lost
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
    )
    _connect(app, settings)
    return app


def _connect(app: Celery, settings: Settings) -> None:
    url = settings.redis_url.get_secret_value()
    app.conf.update(
        broker_url=url,
        result_backend=url,
        # deployments sharing a Redis keep their queues and schedules apart, like their graphs
        task_default_queue=f"{settings.group_prefix}.celery",
    )
    configure_beat(app, settings)


def configure_beat(app: Celery, settings: Settings) -> None:
    """RedBeat: schedule and leader lock in Redis; only one beat fires (see ragstream.schedule)."""
    schedule = settings.schedule
    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_schedule=beat_schedule(schedule),
        beat_max_loop_interval=schedule.max_loop_interval_s,
        redbeat_redis_url=settings.redis_url.get_secret_value(),
        redbeat_key_prefix=settings.keys.redbeat,
        redbeat_lock_timeout=schedule.lock_timeout_s,
    )


# this process's settings, built once; the CLI hands in the ones it built with ``configure``
settings = Settings()
app = make_app(settings)


def configure(new: Settings) -> None:
    """Run the app, its tasks and beat on ``new`` (before the worker or beat starts)."""
    global settings
    settings = new
    _connect(app, new)


def run_beat(new: Settings) -> None:
    """Run beat in this process on ``new`` until it is stopped."""
    configure(new)
    for module in TASK_MODULES:
        importlib.import_module(module)
    # a task module may add a default entry of its own: the configured schedule wins
    app.conf.beat_schedule = beat_schedule(new.schedule)
    app.Beat(loglevel=new.log_level, max_interval=new.schedule.max_loop_interval_s).run()


def exclusive_task(name: str, lock_ttl_s: float = 60.0) -> Callable:
    """Register ``fn(settings, ...)`` as a Celery task that runs at most once at a time across
    the deployment's workers.

    A run that finds the lock taken returns ``{"skipped": "locked"}``. The holder renews the lock
    while it runs, so a long task keeps it and a killed one frees it within ``lock_ttl_s``: a task
    redelivered after its worker died runs again within a minute, not an hour."""

    def wrap(fn: Callable) -> Callable:
        @app.task(name=name, bind=True)
        @functools.wraps(fn)
        def task(self, *args, **kwargs):
            client = connect_sync(settings)
            try:
                # under the deployment's prefix: deployments sharing a Redis run their own jobs
                with renewed_lock(client, settings.keys.lock(name), lock_ttl_s, wait_s=0):
                    return fn(settings, *args, **kwargs)
            except LockTimeout:
                log.info("task already running elsewhere; skipped", extra={"task": name})
                return {"skipped": "locked"}
            finally:
                client.close()

        return task

    return wrap
