"""Embedding: documents.v1 in, chunks.embedded.v1 out. Only what changed is embedded and sent.

Per document, a ledger in Redis holds the last applied version, its chunk hashes and the change
that version made (chunks upserted, chunks removed). An event is compared with the ledger:

- older than the ledger: a replay or a reordering; it changes nothing;
- newer: the chunks whose hash changed are embedded (through the cache) and published, the chunks
  that vanished are deleted downstream;
- the same version and content: a replay after a crash. The ledger may have been written before
  the results were published, so the change recorded for that version is published again;
  downstream upserts are idempotent, so a double publish is harmless and a lost one is not;
- the same version with other content or metadata: the producer reused a version. It is
  dead-lettered (``version_reused``); the stores keep the content they have, alike.

Every chunk carries its document's metadata (search filters on it), so a version whose metadata
changed upserts all its chunks again, their vectors from the cache.

The change a ledger records is the change since the last state known to be published: when
several versions of a document arrive in one batch, or a replayed version is followed by a newer
one, the changes are folded together. Recording only the last version's change lost the chunks
an earlier version had upserted when the publish failed and the batch was replayed (the older
versions are skipped on replay).

Embeddings are cached in Redis by model id, cache namespace and sha256 of the text, so moved or
re-sent text is never embedded twice. ``ragstream reembed`` bumps the namespace: every ledger then
looks stale and every chunk misses the cache.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from prometheus_client import Counter

from ragstream.chunking import Chunk, Chunker, TooManyChunks, text_hash
from ragstream.embedders import Embedder
from ragstream.runtime import Batch, Event, Sink, Worker, WorkerContext
from ragstream.stores.keys import Keys
from ragstream.vectorstores.base import canonical_metadata
from schemas.catalogue import CHUNK_EMBEDDED, CHUNKS_DELETED
from schemas.payloads import (ChunkEmbedded, ChunksDeleted, DocumentDeleted, DocumentUpserted,
                              vector_fields)

OUT_TOPIC = "chunks.embedded.v1"


@dataclass
class Ledger:
    """What the index holds for one document, and the change its version made."""

    version: int = -1
    embedding: str = ""  # model id and cache namespace the chunks were embedded with
    deleted: bool = False
    content: str = ""  # sha256 of the version's title and text ("" in ledgers written before)
    # sha256 of the version's metadata, which every chunk carries ("" in ledgers written before)
    metadata: str = ""
    chunks: dict[str, str] = field(default_factory=dict)  # chunk id -> text hash
    upserted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes | None) -> Ledger:
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


# Write a ledger unless a newer version is already there (two replays may race).
_WRITE_LEDGER = """
for i = 1, #KEYS do
  local current = redis.call('GET', KEYS[i])
  if (not current) or cjson.decode(current)['version'] <= tonumber(ARGV[2 * i - 1]) then
    redis.call('SET', KEYS[i], ARGV[2 * i])
  end
end
return #KEYS
"""


class EmbeddingLedgerSink(Sink):
    """Per document, the last applied version and its chunks (never overwritten by an older one)."""

    def __init__(self, client, keys: Keys):
        self._client = client
        self._keys = keys
        self._write = client.register_script(_WRITE_LEDGER)

    def key(self, doc_id: str) -> str:
        return self._keys.embedding_ledger(doc_id)

    async def flush(self, items: list[tuple[str, Ledger]]) -> None:
        latest = {doc_id: ledger for doc_id, ledger in items}  # the last state of each document
        keys = [self.key(doc_id) for doc_id in latest]
        args = [x for ledger in latest.values() for x in (ledger.version, ledger.dump())]
        await self._write(keys=keys, args=args)


class EmbeddingCacheSink(Sink):
    def __init__(self, client, ttl_s: int):
        self._client = client
        self._ttl_s = ttl_s

    async def flush(self, items: list[tuple[str, bytes]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, vector in items:
                pipe.set(key, vector, ex=self._ttl_s)
            await pipe.execute()


@dataclass
class _Plan:
    """What one event publishes: chunks to upsert (with their vectors) and chunk ids removed."""

    event: Event
    upserts: list[Chunk]
    removed: list[str]
    deleted_document: bool = False


class EmbeddingWorker(Worker):
    name = "embedding"
    consumes = ("documents.v1",)
    emits = (OUT_TOPIC,)
    max_batch_records = 64  # at ~25 chunks/s on a CPU, a 500-document batch ran for minutes

    def __init__(self, embedder: Embedder | None = None):
        self._embedder = embedder

    async def setup(self, ctx: WorkerContext) -> None:
        s = ctx.settings
        if self._embedder is None:
            # RAGSTREAM_EMBEDDER=triton: the model runs on Triton, through the shared client
            self._embedder = await asyncio.to_thread(lambda: ctx.embedder)
        # the first call's one-off costs (kernel set-up, lazy loads) fall here,
        # not on the first batch's freshness
        await asyncio.to_thread(self._embedder.embed, ["warm-up"])
        self.chunker = Chunker(self._embedder.model.tokenizer, s.chunk_tokens,
                               s.chunk_overlap_tokens, max_chunks=s.max_chunks_per_document)
        self._keys = s.keys
        self._encoding = s.vector_encoding
        self._redis = ctx.redis()
        self._ledgers = EmbeddingLedgerSink(self._redis, s.keys)
        self.sinks = {"ledger": self._ledgers,
                      "cache": EmbeddingCacheSink(self._redis, s.embedding_cache_ttl_s)}
        r = ctx.metrics.registry
        self.cache_hits = Counter("ragstream_embedding_cache_hits", "Chunk vectors from the cache",
                                  registry=r)
        self.cache_misses = Counter("ragstream_embedding_cache_misses",
                                    "Chunk vectors computed by the model", registry=r)
        self.chunks_published = Counter("ragstream_chunks_published",
                                        "Chunk upserts and removals published", ("kind",),
                                        registry=r)

    async def teardown(self) -> None:
        await self._redis.aclose()

    async def process(self, batch: Batch) -> None:
        namespace = await self._redis.get(self._keys.embedding_namespace)
        embedding = f"{self._embedder.model_id}:{int(namespace or 0)}"
        doc_ids = list(dict.fromkeys(e.payload.doc_id for e in batch.events))
        raw = await self._redis.mget([self._ledgers.key(d) for d in doc_ids])
        ledgers = {d: Ledger.parse(r) for d, r in zip(doc_ids, raw, strict=True)}

        before = dict(ledgers)
        # off the event loop: a long document takes seconds to tokenize and the consumer must
        # keep heartbeating meanwhile (an evicted worker's commit fails and the batch replays)
        split = await asyncio.to_thread(self._split, [
            e for e in batch.events if isinstance(e.payload, DocumentUpserted)
            and e.payload.version >= ledgers[e.payload.doc_id].version])
        unpublished: set[str] = set()  # documents whose recorded change may not be published
        plans = []
        for event in batch.events:  # in offset order, so a document's versions apply in order
            plan = self._plan(event, split, ledgers, unpublished, embedding, batch)
            if plan is not None:
                plans.append(plan)
        vectors = await self._vectors([c for p in plans for c in p.upserts], embedding, batch)
        for plan in plans:
            self._publish(plan, vectors, batch)
        for doc_id, ledger in ledgers.items():
            if ledger is not before[doc_id]:
                batch.write("ledger", (doc_id, ledger))

    def _split(self, events: list[Event]) -> dict[int, list[Chunk] | TooManyChunks]:
        """Each event's chunks, by ``id(event)``: two events of one batch may share an event id
        (a reused version has its original's), and keyed by it, the original was planned with
        the reused version's chunks and indexed them (found by the adversarial chaos phase)."""
        out: dict[int, list[Chunk] | TooManyChunks] = {}
        for event in events:
            doc = event.payload
            try:
                out[id(event)] = self.chunker.split(doc.doc_id, doc.text, doc.title)
            except TooManyChunks as exc:
                out[id(event)] = exc
        return out

    def _plan(self, event: Event, split: dict[int, list[Chunk] | TooManyChunks],
              ledgers: dict[str, Ledger], unpublished: set[str], embedding: str,
              batch: Batch) -> _Plan | None:
        doc = event.payload
        ledger = ledgers[doc.doc_id]
        if doc.version < ledger.version:
            return None
        if isinstance(doc, DocumentDeleted):
            if doc.version == ledger.version and ledger.deleted:  # a replay: publish it again
                unpublished.add(doc.doc_id)
                return _Plan(event, [], ledger.removed, deleted_document=True)
            removed = sorted(ledger.chunks)
            self._record(ledgers, unpublished, doc.doc_id,
                         Ledger(doc.version, embedding, True, "", "", {}, [], removed))
            return _Plan(event, [], removed, deleted_document=True)

        assert isinstance(doc, DocumentUpserted)
        if doc.version == ledger.version and ledger.deleted:
            return None
        chunks = split[id(event)]
        if isinstance(chunks, TooManyChunks):
            batch.reject(event, "too_many_chunks", str(chunks))
            return None
        content = text_hash(f"{doc.title}\x00{doc.text}")
        metadata = text_hash(canonical_metadata(doc.metadata))
        hashes = {c.chunk_id: c.text_hash for c in chunks}
        if doc.version == ledger.version:
            same = content == ledger.content if ledger.content else hashes == ledger.chunks
            if not same or ledger.metadata not in ("", metadata):
                batch.reject(event, "version_reused", f"version {doc.version} of {doc.doc_id!r} "
                             "was applied with other content; a change needs a higher version")
                return None
            if embedding == ledger.embedding:  # a replay: publish the recorded change again
                unpublished.add(doc.doc_id)
                upserted = set(ledger.upserted)
                return _Plan(event, [c for c in chunks if c.chunk_id in upserted], ledger.removed)
        same_chunks = embedding == ledger.embedding and metadata == ledger.metadata
        reuse = ledger.chunks if same_chunks else {}
        upserts = [c for c in chunks if reuse.get(c.chunk_id) != c.text_hash]
        removed = sorted(set(ledger.chunks) - set(hashes))
        self._record(ledgers, unpublished, doc.doc_id,
                     Ledger(doc.version, embedding, False, content, metadata, hashes,
                            [c.chunk_id for c in upserts], removed))
        return _Plan(event, upserts, removed)

    @staticmethod
    def _record(ledgers: dict[str, Ledger], unpublished: set[str], doc_id: str,
                new: Ledger) -> None:
        """Make ``new`` the document's ledger; its change folds in the previous ledger's when
        that one's change may not have been published yet (see the module docstring)."""
        old = ledgers[doc_id]
        if doc_id in unpublished:
            upserted = set(old.upserted) | set(new.upserted)
            new.upserted = [c for c in new.chunks if c in upserted]
            new.removed = sorted((set(old.removed) | set(new.removed)) - set(new.chunks))
        ledgers[doc_id] = new
        unpublished.add(doc_id)

    async def _vectors(self, chunks: list[Chunk], embedding: str,
                       batch: Batch) -> dict[str, np.ndarray]:
        """Vectors by text hash: from the cache, or embedded together in one call."""
        hashes = list(dict.fromkeys(c.text_hash for c in chunks))
        if not hashes:
            return {}
        keys = [self._keys.embedding_cache(embedding, h) for h in hashes]
        cached = await self._redis.mget(keys)
        out = {h: np.frombuffer(v, dtype=np.float32) for h, v in zip(hashes, cached, strict=True)
               if v is not None}
        texts = {c.text_hash: c.text for c in chunks if c.text_hash not in out}
        self.cache_hits.inc(len(out))
        self.cache_misses.inc(len(texts))
        if texts:
            # off the event loop: the consumer must keep heartbeating while the model runs
            computed = await asyncio.to_thread(self._embedder.embed, list(texts.values()))
            key_of = dict(zip(hashes, keys, strict=True))
            for h, vector in zip(texts, computed, strict=True):
                out[h] = vector
                batch.write("cache", (key_of[h], vector.tobytes()))
        return out

    def _publish(self, plan: _Plan, vectors: dict[str, np.ndarray], batch: Batch) -> None:
        event = plan.event
        doc = event.payload
        source_time: datetime = event.envelope.time
        for c in plan.upserts:
            batch.emit(OUT_TOPIC, CHUNK_EMBEDDED, ChunkEmbedded(
                chunk_id=c.chunk_id, doc_id=doc.doc_id, doc_version=doc.version,
                position=c.position, text=c.text, text_hash=c.text_hash,
                model_id=self._embedder.model_id, metadata=doc.metadata,
                source_time=source_time, **vector_fields(vectors[c.text_hash], self._encoding)),
                cause=event)
        if plan.removed or plan.deleted_document:
            batch.emit(OUT_TOPIC, CHUNKS_DELETED, ChunksDeleted(
                doc_id=doc.doc_id, doc_version=doc.version, chunk_ids=plan.removed,
                all_chunks=plan.deleted_document, source_time=source_time), cause=event)
        self.chunks_published.labels("upsert").inc(len(plan.upserts))
        self.chunks_published.labels("remove").inc(len(plan.removed))
