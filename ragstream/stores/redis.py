"""Redis (or FalkorDB, which is Redis too): the cache, ledgers and locks."""

from __future__ import annotations

import redis.asyncio
import redis.exceptions

from ragstream.config import Settings
from ragstream.errors import declare_unavailable

# a Redis that is down, timing out or still loading its data is backpressure, not a bad event
declare_unavailable(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError)


def connect(settings: Settings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
