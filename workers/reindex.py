"""Reindex: chunks.embedded.v1 in; one vector store's chunks out.

Each store a deployment keeps fresh (``RAGSTREAM_STORE_FRESH``) has its own reindex worker and
consumer group, so a slow or down store never holds back another: ``reindex`` writes the embedded
index, ``reindex_pgvector`` PostgreSQL, ``reindex_qdrant`` Qdrant. The store applies each batch
with its version guard (ragstream.vectorstores.base): a replay or an outdated version changes
nothing. Once ``apply`` returns, the change is searchable; the freshness histogram measures from
the source document event to that moment.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from prometheus_client import Counter

from ragstream.embedders import stored_vectors
from ragstream.errors import unavailable_types
from ragstream.metrics import LATENCY_BUCKETS, BulkHistogram
from ragstream.runtime import Batch, Sink, Worker, WorkerContext
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import (ChunkStore, ChunkUpsert, DocumentDelete, Operation,
                                         StoreUnavailable)
from schemas.payloads import ChunkEmbedded, ChunksDeleted


class StoreSink(Sink):
    def __init__(self, store: ChunkStore, freshness: BulkHistogram, changes: Counter):
        self._store = store
        # label children bound once: a lookup per chunk was a tenth of the worker's write time
        self._freshness = freshness.labels(store.name)
        self._upserted = changes.labels(store.name, "upsert")
        self._deleted = changes.labels(store.name, "delete")

    async def flush(self, items: list[tuple[Operation, datetime | None]]) -> None:
        try:
            changed = await asyncio.to_thread(self._store.apply, [op for op, _ in items])
        except unavailable_types() as exc:  # the client library's own "down" errors
            raise StoreUnavailable(f"{self._store.name}: {exc}") from exc
        now = time.time()
        upserted = deleted = 0
        ages = []
        for (op, source_time), n in zip(items, changed, strict=True):
            if n:
                if isinstance(op, ChunkUpsert):
                    upserted += n
                else:
                    deleted += n
                if source_time is not None:
                    ages.append(now - source_time.timestamp())
        self._upserted.inc(upserted)
        self._deleted.inc(deleted)
        self._freshness.observe_many(ages)


class ReindexWorker(Worker):
    name = "reindex"
    consumes = ("chunks.embedded.v1",)
    store = "embedded"

    async def setup(self, ctx: WorkerContext) -> None:
        r = ctx.metrics.registry
        freshness = BulkHistogram("ragstream_index_freshness_seconds",
                                  "Source document event time to searchable time, per store",
                                  ("store",), buckets=LATENCY_BUCKETS, registry=r)
        changes = Counter("ragstream_index_changes", "Chunks upserted or deleted, per store",
                          ("store", "op"), registry=r)
        self._model_id, self._dimension = stored_vectors(ctx.settings)
        self._store = await asyncio.to_thread(open_store, ctx.settings, self.store)
        # a table or collection of another model would mix vectors that cannot be compared
        await asyncio.to_thread(self._store.ensure_schema, self._model_id, self._dimension)
        self.sinks = {"store": StoreSink(self._store, freshness, changes)}

    async def teardown(self) -> None:
        await asyncio.to_thread(self._store.close)

    async def process(self, batch: Batch) -> None:
        for event in batch.events:
            c = event.payload
            if isinstance(c, ChunkEmbedded):
                vector = c.embedding()
                if vector is None:
                    batch.reject(event, "no_vector", f"chunk {c.chunk_id} has no inline vector")
                    continue
                # one vector of another size made every reader's catch-up raise: search
                # answered 500 everywhere until the index was rebuilt
                if (c.model_id, len(vector)) != (self._model_id, self._dimension):
                    batch.reject(event, "wrong_embedding", f"chunk {c.chunk_id} holds "
                                 f"{len(vector)} dimensions of {c.model_id!r}; this store "
                                 f"holds {self._dimension} of {self._model_id!r}")
                    continue
                op: Operation = ChunkUpsert(c.chunk_id, c.doc_id, c.doc_version, c.position,
                                            c.text, c.text_hash, c.model_id, vector, c.metadata)
            else:
                assert isinstance(c, ChunksDeleted)
                op = DocumentDelete(c.doc_id, c.doc_version, c.chunk_ids, c.all_chunks)
            batch.write("store", (op, c.source_time))


class PgvectorReindexWorker(ReindexWorker):
    name = "reindex_pgvector"
    store = "pgvector"


class QdrantReindexWorker(ReindexWorker):
    name = "reindex_qdrant"
    store = "qdrant"
