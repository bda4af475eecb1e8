"""Redis (or FalkorDB, which is Redis too): the cache, ledgers and locks."""

from __future__ import annotations

import redis.asyncio

from ragstream.config import Settings


def connect(settings: Settings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
