"""Locks in Redis that their holder renews while it works, so a killed holder frees them within
one TTL. The GCN refresh holds one per graph (beat, trigger or CLI: never two at once), and every
scheduled task holds one per task (``exclusive_task``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis


class LockTimeout(Exception):
    pass


@contextlib.contextmanager
def renewed_lock(client: redis.Redis, name: str, ttl_s: float, wait_s: float) -> Iterator[None]:
    lock = client.lock(name, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire():
        raise LockTimeout(f"{name} still held after {wait_s}s")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            lock.extend(ttl_s, replace_ttl=True)

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
