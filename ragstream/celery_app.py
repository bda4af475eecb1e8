"""The Celery app for scheduled refresh jobs (index compaction, gazetteer refresh, GCN refresh).

Jobs are plain idempotent functions in their worker's package; each registers a task here with
``@exclusive_task``, which holds a per-task lock in Redis so two overlapping runs cannot collide.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable

import redis
from celery import Celery

from ragstream.config import Settings
from ragstream.locks import LockTimeout, renewed_lock
from ragstream.schedule import ScheduleSettings, beat_schedule

log = logging.getLogger(__name__)

# Modules that register tasks; the Celery worker imports them at start.
TASK_MODULES: list[str] = ["ragstream.gcn.tasks", "ragstream.nlp.refresh",
                          "ragstream.index.tasks"]


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    url = settings.redis_url.get_secret_value()
    app = Celery("ragstream", broker=url, backend=url, include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,               # a killed worker's task is redelivered, not lost
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        timezone="UTC",
        # deployments sharing a Redis keep their queues and schedules apart, like their graphs
        task_default_queue=f"{settings.group_prefix}.celery",
    )
    configure_beat(app, settings)
    return app


def configure_beat(app: Celery, settings: Settings) -> None:
    """RedBeat: schedule and leader lock in Redis; only one beat fires (see ragstream.schedule)."""
    schedule = ScheduleSettings()
    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_schedule=beat_schedule(schedule),
        beat_max_loop_interval=schedule.max_loop_interval_s,
        redbeat_redis_url=settings.redis_url.get_secret_value(),
        redbeat_key_prefix=f"{settings.group_prefix}:redbeat",
        redbeat_lock_timeout=schedule.lock_timeout_s,
    )


app = make_app()


def run_beat(loglevel: str = "INFO") -> None:
    """Run beat in this process until it is stopped."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    # a task module may add a default entry of its own: the configured schedule wins
    app.conf.beat_schedule = beat_schedule()
    app.Beat(loglevel=loglevel, max_interval=ScheduleSettings().max_loop_interval_s).run()


def exclusive_task(name: str, lock_ttl_s: float = 60.0) -> Callable:
    """Register ``fn`` as a Celery task that runs at most once at a time across all workers.

    A run that finds the lock taken returns ``{"skipped": "locked"}``. The holder renews the lock
    while it runs, so a long task keeps it and a killed one frees it within ``lock_ttl_s``: a task
    redelivered after its worker died runs again within a minute, not an hour."""

    def wrap(fn: Callable) -> Callable:
        @app.task(name=name, bind=True)
        @functools.wraps(fn)
        def task(self, *args, **kwargs):
            client = redis.Redis.from_url(Settings().redis_url.get_secret_value())
            try:
                with renewed_lock(client, f"ragstream:lock:{name}", lock_ttl_s, wait_s=0):
                    return fn(*args, **kwargs)
            except LockTimeout:
                log.info("task already running elsewhere; skipped", extra={"task": name})
                return {"skipped": "locked"}
            finally:
                client.close()

        return task

    return wrap
