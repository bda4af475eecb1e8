"""The embedded store: chunks in Redis, a usearch + tantivy replica in each reader (ragstream.index).

Writes go through one Lua script that applies a batch atomically and logs only real changes;
reads refresh this process's replica from the log first, so a change is searchable as soon as
``apply`` returns. It needs nothing but the Redis the deployment already has, and stays the
default of ``make run``. It does not shard: every chunk lives in one Redis (the script needs
every key of a batch on one node), and every reader holds a full copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence

import numpy as np
import redis

from ragstream.config import Settings
from ragstream.index import snapshots
from ragstream.index.replica import IndexReplica, IndexState
from ragstream.index.store import APPLY_CHANGES, delete_args, upsert_args
from ragstream.stores.redis import connect_sync
from ragstream.vectorstores.base import (NO_FILTER, Candidates, ChunkStore, ChunkUpsert, Counts,
                                         DocumentDelete, Filter, Operation, Search, StoredChunk,
                                         StoreMismatch, canonical_metadata)


class EmbeddedStore(ChunkStore):
    name = "embedded"

    def __init__(self, settings: Settings):
        self._settings = settings
        self._keys = settings.keys
        self._redis = connect_sync(settings)
        self._apply = self._redis.register_script(APPLY_CHANGES)
        self._replica: IndexReplica | None = None  # a writer never loads one

    @property
    def replica(self) -> IndexReplica:
        if self._replica is None:
            self._replica = IndexReplica(self._settings)
        return self._replica

    def close(self) -> None:
        if self._replica is not None:
            self._replica.close()
        self._redis.close()

    def ensure_schema(self, model_id: str, dimension: int) -> None:
        key = self._keys.index_schema
        self._redis.hsetnx(key, "model_id", model_id)
        self._redis.hsetnx(key, "dimension", dimension)
        held = self._redis.hmget(key, "model_id", "dimension")
        if (held[0].decode(), int(held[1])) != (model_id, dimension):
            raise StoreMismatch(
                f"the embedded index of {self._settings.group_prefix!r} holds {int(held[1])}-d "
                f"vectors of {held[0].decode()!r}; this deployment writes {dimension}-d vectors of "
                f"{model_id!r}. Re-embed into a new RAGSTREAM_GROUP_PREFIX, or remove the index")

    def apply(self, operations: Sequence[Operation]) -> list[int]:
        if not operations:
            return []
        args: list = [self._settings.group_prefix]
        for op in operations:
            if isinstance(op, ChunkUpsert):
                args += upsert_args(op.chunk_id, op.doc_id, op.doc_version, op.position, op.text,
                                    op.text_hash, op.model_id, op.vector,
                                    canonical_metadata(op.metadata))
            else:
                assert isinstance(op, DocumentDelete)
                args += delete_args(op.doc_id, op.doc_version, list(op.chunk_ids), op.all_chunks)
        return [int(n) for n in self._apply(keys=[], args=args)]

    batched_reads = True

    def candidates(self, vector: np.ndarray | None, query: str | None, n: int,
                   where: Filter = NO_FILTER) -> Candidates:
        return self.candidates_many([(vector, query, n, where)])[0]

    def candidates_many(self, searches: Sequence[Search]) -> list[Candidates]:
        # one refresh and one hold of the replica for the whole batch, and the unfiltered dense
        # searches as one usearch call: 64 queries on 8 threads queued on the replica's lock,
        # each refreshing from Redis, and spent more time handing the GIL over than searching
        replica = self.replica
        with replica.lock:
            state = replica.refresh()
            by_depth: dict[int, list[int]] = {}  # the same depth: the same answers as alone
            for i, (v, _, n, where) in enumerate(searches):
                if v is not None and where.empty:
                    by_depth.setdefault(n, []).append(i)
            dense: dict[int, list[str]] = {}
            for n, batch in by_depth.items():
                found = state.dense.search_many(np.stack([searches[i][0] for i in batch]), n)
                for i, keys in zip(batch, found, strict=True):
                    dense[i] = [state.by_key[k] for k, _ in keys if k in state.by_key]
            out = []
            for i, (vector, query, n, where) in enumerate(searches):
                ranked = dense.get(i)
                if ranked is None:
                    ranked = [] if vector is None else _filtered(
                        lambda m, v=vector: [state.by_key[key] for key, _ in
                                             state.dense.search(v, m) if key in state.by_key],
                        state, n, where)
                sparse = [] if not query else _filtered(
                    lambda m, q=query: [chunk_id for chunk_id, _ in state.sparse.search(q, m)],
                    state, n, where)
                out.append(Candidates(ranked, sparse,
                                      {c: _stored(state, c) for c in {*ranked, *sparse}}))
            return out

    def counts(self) -> Counts:
        replica = self.replica
        with replica.lock:
            state = replica.refresh()
            return Counts(len({r.doc_id for r in state.chunks.values()}), len(state.chunks))

    def generation(self) -> str:
        # the change log's last entry id: every change that took effect appends one, and the
        # stream keeps its last id when compaction trims it
        try:
            return self._redis.xinfo_stream(self._keys.index_log)["last-generated-id"].decode()
        except redis.ResponseError:  # no change yet: the stream does not exist
            return "0-0"

    def drop(self) -> None:
        for key in self._redis.scan_iter(match=f"{self._settings.group_prefix}:index:*",
                                         count=1_000):
            self._redis.delete(key)
        self.close()
        shutil.rmtree(snapshots.index_dir(self._settings.data_dir), ignore_errors=True)

    def scan(self, after: str | None, limit: int) -> list[ChunkUpsert]:
        # the chunk ids come from the replica (ordered), the vectors and versions from Redis
        replica = self.replica
        with replica.lock:
            ids = sorted(c for c in replica.refresh().chunks if after is None or c > after)
        out: list[ChunkUpsert] = []
        while ids and len(out) < limit:
            page, ids = ids[:limit - len(out)], ids[limit - len(out):]
            pipe = self._redis.pipeline(transaction=False)
            for chunk_id in page:
                pipe.hgetall(f"{self._keys.index_chunk_prefix}{chunk_id}")
            found = [(c, f) for c, f in zip(page, pipe.execute(), strict=True) if f]
            # the document's applied version, not the chunk's: a chunk unchanged since version 1
            # of a document now at version 3 must not be refused by a target already at 3
            for chunk_id, f in found:
                pipe.hget(self._keys.index_doc(f[b"doc_id"].decode()), "version")
            versions = pipe.execute()
            out += [_upsert(c, f, int(v or f[b"doc_version"]))
                    for (c, f), v in zip(found, versions, strict=True)]
        return out


def _filtered(search: Callable[[int], list[str]], state: IndexState, n: int,
              where: Filter) -> list[str]:
    """The first ``n`` admitted ids, searching deeper until enough are found or none are left."""
    if where.empty:
        return search(n)
    total = len(state.chunks)
    if total == 0:  # tantivy panics when asked for 0 hits (schemathesis, POST /v1/search)
        return []
    depth = n
    while True:
        depth = min(depth * 4, total)
        admitted = [c for c in search(depth) if c in state.chunks
                    and where.admits(_stored(state, c))]
        if len(admitted) >= n or depth >= total:
            return admitted[:n]


def _stored(state: IndexState, chunk_id: str) -> StoredChunk:
    r = state.chunks[chunk_id]
    return StoredChunk(r.chunk_id, r.doc_id, r.position, r.text, r.metadata)


def _upsert(chunk_id: str, f: dict[bytes, bytes], doc_version: int) -> ChunkUpsert:
    return ChunkUpsert(chunk_id, f[b"doc_id"].decode(), doc_version,
                       int(f[b"position"]), f[b"text"].decode(), f[b"text_hash"].decode(),
                       f[b"model_id"].decode(), np.frombuffer(f[b"vector"], dtype=np.float32),
                       json.loads(f.get(b"metadata", b"{}")))
