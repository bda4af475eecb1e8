"""The dirty-entity set: entities whose embedding may be stale, gathered from kg.changes.v1.

A Redis set: adding is idempotent (a replayed event changes nothing) and durable across worker
restarts; a refresh removes only the members it read, so entities added meanwhile stay dirty.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio

from ragstream.sinks import Sink
from ragstream.stores.keys import GraphKeys
from schemas.payloads import KgChanged


def dirty_entities(change: KgChanged) -> set[str]:
    """Every entity whose features or edges the change touched: both ends of every edge."""
    return set(change.entities) | {end for edge in change.edges for end in edge}


class DirtySet:
    def __init__(self, client: redis.asyncio.Redis, graph_name: str):
        self.client = client
        self.key = GraphKeys(graph_name).gcn_dirty

    async def add(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return await self.client.sadd(self.key, *ids) if ids else 0

    async def members(self) -> set[str]:
        return {m.decode() for m in await self.client.smembers(self.key)}

    async def remove(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            await self.client.srem(self.key, *ids)

    async def size(self) -> int:
        return await self.client.scard(self.key)


class DirtySetSink(Sink):
    """Flushes batches of dirty entity ids into the set."""

    def __init__(self, dirty: DirtySet):
        self.dirty = dirty

    async def flush(self, items: list[set[str]]) -> None:
        await self.dirty.add(set().union(*items))
