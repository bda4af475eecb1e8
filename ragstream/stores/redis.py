"""Redis (or FalkorDB, which is Redis too): the cache, ledgers and locks. Every client comes from
here, so every one has the same timeouts; the key names come from ragstream.stores.keys."""

from __future__ import annotations

import redis
import redis.asyncio
import redis.exceptions

from ragstream.config import Settings
from ragstream.errors import declare_unavailable

# a Redis that is down, timing out or still loading its data is backpressure, not a bad event
declare_unavailable(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError)

_OPTIONS = {"socket_timeout": 10, "socket_connect_timeout": 5, "health_check_interval": 30}


def connect(settings: Settings, **options) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value(),
                                        **{**_OPTIONS, **options})


def connect_sync(settings: Settings, **options) -> redis.Redis:
    """For the threads that cannot await: Celery tasks, lock renewal, the index replica."""
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), **{**_OPTIONS, **options})
