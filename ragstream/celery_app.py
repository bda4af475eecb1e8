"""The Celery app for scheduled refresh jobs (index compaction, gazetteer refresh, GCN refresh).

Jobs are plain idempotent functions in their worker's package; each registers a task here with
``@exclusive_task``, which holds a per-task lock in Redis so two overlapping runs cannot collide.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import redis
from celery import Celery

from ragstream.config import Settings

log = logging.getLogger(__name__)

# Modules that register tasks; the Celery worker imports them at start.
TASK_MODULES: list[str] = ["ragstream.nlp.refresh", "ragstream.index.tasks"]


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
    )
    return app


app = make_app()


def exclusive_task(name: str, lock_ttl_s: int = 3600) -> Callable:
    """Register ``fn`` as a Celery task that runs at most once at a time across all workers.

    A run that finds the lock taken returns ``{"skipped": "locked"}``; the lock expires after
    ``lock_ttl_s`` so a crashed holder cannot block the job forever."""

    def wrap(fn: Callable) -> Callable:
        @app.task(name=name, bind=True)
        @functools.wraps(fn)
        def task(self, *args, **kwargs):
            client = redis.Redis.from_url(Settings().redis_url.get_secret_value())
            lock = client.lock(f"ragstream:lock:{name}", timeout=lock_ttl_s, blocking=False)
            if not lock.acquire():
                log.info("task already running elsewhere; skipped", extra={"task": name})
                return {"skipped": "locked"}
            try:
                return fn(*args, **kwargs)
            finally:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    log.warning("task lock expired before the task finished", extra={"task": name})
                client.close()

        return task

    return wrap
