"""GCN refresh: gathers the entities kg.changes.v1 touched into the durable dirty set.

The refresh itself is a job (``ragstream.gcn.jobs``) that the beat schedule runs every few
minutes; this worker also asks for one early when many entities are dirty. Each new embedding
version is announced on graph.embeddings.v1 by the job that makes it visible.
"""

from __future__ import annotations

from ragstream.gcn.dirty import DirtySet, DirtySetSink, dirty_entities
from ragstream.runtime import Batch, Worker, WorkerContext
from ragstream.stores.keys import GraphKeys

TRIGGER_COOLDOWN_S = 60  # ask for at most one early refresh per minute


class GcnRefreshWorker(Worker):
    name = "gcn_refresh"
    consumes = ("kg.changes.v1",)

    async def setup(self, ctx: WorkerContext) -> None:
        self._redis = ctx.redis()
        graph_name = ctx.settings.kg.graph_name(ctx.settings)
        self.dirty = DirtySet(self._redis, graph_name)
        self.sinks = {"dirty": DirtySetSink(self.dirty)}
        self._trigger_at = ctx.settings.gcn.trigger_dirty
        self._trigger_key = GraphKeys(graph_name).gcn_triggered

    async def process(self, batch: Batch) -> None:
        for event in batch.events:
            batch.write("dirty", dirty_entities(event.payload))
        if self._trigger_at and await self.dirty.size() >= self._trigger_at \
                and await self._redis.set(self._trigger_key, 1, nx=True, ex=TRIGGER_COOLDOWN_S):
            from ragstream.gcn.tasks import refresh_incremental

            refresh_incremental.delay()

    async def teardown(self) -> None:
        await self._redis.aclose()
