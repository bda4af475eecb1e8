"""Reindex: chunks.embedded.v1 in; the hybrid index's chunk store and change log out.

The worker writes each batch to Redis with one atomic script that ignores outdated document
versions and logs only real changes (see ragstream/index/store.py). Once that write returns, the
change is searchable: every reader replica applies the log before it answers a query. The
freshness histogram measures from the source document event to that moment.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import Counter, Histogram

from ragstream.embedders import stored_vectors
from ragstream.index.store import APPLY_CHANGES, delete_args, upsert_args
from ragstream.metrics import LATENCY_BUCKETS
from ragstream.runtime import Batch, Sink, Worker, WorkerContext
from ragstream.stores.redis import connect
from schemas.payloads import ChunkEmbedded, ChunksDeleted


class IndexSink(Sink):
    def __init__(self, client, prefix: str, freshness: Histogram, changes: Counter):
        self._apply = client.register_script(APPLY_CHANGES)
        self._prefix = prefix
        self._freshness = freshness
        self._changes = changes

    async def flush(self, items: list[tuple[list, datetime | None]]) -> None:
        args = [self._prefix] + [a for op, _ in items for a in op]
        changed = await self._apply(keys=[], args=args)
        now = time.time()
        for (op, source_time), n in zip(items, changed, strict=True):
            if n:
                self._changes.labels(op[0]).inc(n)
                if source_time is not None:
                    self._freshness.observe(max(now - source_time.timestamp(), 0.0))


class ReindexWorker(Worker):
    name = "reindex"
    consumes = ("chunks.embedded.v1",)

    async def setup(self, ctx: WorkerContext) -> None:
        r = ctx.metrics.registry
        freshness = Histogram("ragstream_index_freshness_seconds",
                              "Source document event time to searchable time",
                              buckets=LATENCY_BUCKETS, registry=r)
        changes = Counter("ragstream_index_changes", "Chunks upserted or deleted in the index",
                          ("op",), registry=r)
        self._model_id, self._dimension = stored_vectors(ctx.settings)
        self._redis = connect(ctx.settings)
        self.sinks = {"index": IndexSink(self._redis, ctx.settings.group_prefix, freshness,
                                         changes)}

    async def teardown(self) -> None:
        await self._redis.aclose()

    async def process(self, batch: Batch) -> None:
        for event in batch.events:
            c = event.payload
            if isinstance(c, ChunkEmbedded):
                if c.vector is None:
                    batch.reject(event, "no_vector", f"chunk {c.chunk_id} has no inline vector")
                    continue
                # one vector of another size made every reader's catch-up raise: search
                # answered 500 everywhere until the index was rebuilt
                if (c.model_id, len(c.vector)) != (self._model_id, self._dimension):
                    batch.reject(event, "wrong_embedding", f"chunk {c.chunk_id} holds "
                                 f"{len(c.vector)} dimensions of {c.model_id!r}; this index "
                                 f"holds {self._dimension} of {self._model_id!r}")
                    continue
                op = upsert_args(c.chunk_id, c.doc_id, c.doc_version, c.position, c.text,
                                 c.text_hash, c.model_id, c.vector)
            else:
                assert isinstance(c, ChunksDeleted)
                op = delete_args(c.doc_id, c.doc_version, c.chunk_ids, c.all_chunks)
            batch.write("index", (op, c.source_time))
