"""What both Qdrant stores do alike: the ChunkStore methods, over a few engine primitives that
the embedded store (qdrant-edge-py) and the server store (qdrant-client) each implement.

Reads for the version guard, the guard itself (``guard.plan``), search, counts, scan and the
generation token are written once here, so the two engines differ only in how a request reaches
Qdrant, never in what is asked.
"""

from __future__ import annotations

import bisect
import contextlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ragstream.vectorstores.base import (NO_FILTER, Candidates, ChunkStore, ChunkUpsert, Counts,
                                         DocumentDelete, Filter, Operation, StoreMismatch)
from ragstream.vectorstores.qdrant import guard
from ragstream.vectorstores.qdrant.mapping import (COLLECTION_POINT_ID, COMPARED, IS_CHUNK,
                                                   SCHEMA_VERSION, SPARSE_ENCODING,
                                                   Condition, MatchAny, Plan, Step, chunk_upsert,
                                                   document_point_id, point_id, query_sparse,
                                                   search_conditions, stored_chunk)

Payload = dict[str, Any]
Sparse = tuple[list[int], list[float]]
_PAGE = 1_000


class QdrantStore(ChunkStore):
    name = "qdrant"
    where: str  # the collection or shard, for messages
    _ids_cache: tuple[str, list[str]] | None = None  # (generation, every chunk id sorted)

    # engine primitives ---------------------------------------------------------------------

    @abstractmethod
    def _retrieve(self, ids: list[str], fields: list[str] | None,
                  dense: bool = False) -> list[tuple[Payload, list[float] | None]]:
        """The points with these ids that exist: payload (``fields`` only; None: all) and, with
        ``dense``, the dense vector."""

    @abstractmethod
    def _scroll(self, where: tuple[Condition, ...], fields: list[str], offset: Any,
                limit: int) -> tuple[list[Payload], Any]:
        """A page of payloads and the offset of the next page (None: no more)."""

    @abstractmethod
    def _execute(self, steps: list[Step]) -> None: ...

    @abstractmethod
    def _search(self, dense: list[float] | None, sparse: Sparse | None, n: int,
                where: tuple[Condition, ...]) -> tuple[list[Payload], list[Payload]]:
        """The ``SHOWN`` payloads of the best ``n`` by each ranking asked for."""

    @abstractmethod
    def _fuse(self, dense: list[float], sparse: Sparse, n: int, k: int,
              where: tuple[Condition, ...]) -> list[tuple[Payload, float]]:
        """Qdrant's own RRF over a dense and a BM25 prefetch of ``n`` each."""

    @abstractmethod
    def _count(self, where: tuple[Condition, ...]) -> int: ...

    @abstractmethod
    def _distinct(self, key: str, where: tuple[Condition, ...], limit: int) -> int:
        """How many distinct values ``key`` takes (at most ``limit``)."""

    def _writing(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _reading(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _applied(self, plan: Plan) -> None:
        """Called after each ``apply`` that wrote something."""

    # ChunkStore ------------------------------------------------------------------------------

    def apply(self, operations: Sequence[Operation]) -> list[int]:
        if not operations:
            return []
        with self._writing():
            plan = self._plan(operations)
            if plan.steps:
                self._execute(plan.steps)
        if plan.steps:
            self._applied(plan)
        return plan.counts

    def _plan(self, operations: Sequence[Operation]) -> Plan:
        docs = sorted({op.doc_id for op in operations})
        versions = {p["doc_id"]: p["doc_version"] for p, _ in self._retrieve(
            [document_point_id(d) for d in docs], ["doc_id", "doc_version"])}
        named = {op.chunk_id for op in operations if isinstance(op, ChunkUpsert)}
        named |= {c for op in operations if isinstance(op, DocumentDelete) for c in op.chunk_ids}
        stored = {p["chunk_id"]: p for p, _ in self._retrieve(
            [point_id(c) for c in sorted(named)], ["chunk_id", *COMPARED])}
        whole = sorted({op.doc_id for op in operations
                        if isinstance(op, DocumentDelete) and op.all_chunks})
        members: dict[str, set[str]] = {d: set() for d in whole}
        if whole:
            for p in self._every(IS_CHUNK + (MatchAny("doc_id", tuple(whole)),),
                                 ["chunk_id", *COMPARED]):
                stored[p["chunk_id"]] = p
                members[p["doc_id"]].add(p["chunk_id"])
        return guard.plan(operations, versions, stored, members)

    def candidates(self, vector: np.ndarray | None, query: str | None, n: int,
                   where: Filter = NO_FILTER) -> Candidates:
        dense = None if vector is None else np.asarray(vector, dtype=np.float32).tolist()
        sparse = query_sparse(query) if query else None
        if sparse is not None and not sparse[0]:  # no words: nothing can match
            sparse = None
        if (dense is None and sparse is None) or where.doc_ids == frozenset():
            return Candidates([], [], {})
        with self._reading():
            by_dense, by_sparse = self._search(dense, sparse, n, search_conditions(where))
        chunks = {p["chunk_id"]: stored_chunk(p) for p in (*by_dense, *by_sparse)}
        return Candidates([p["chunk_id"] for p in by_dense], [p["chunk_id"] for p in by_sparse],
                          chunks)

    def fused(self, vector: np.ndarray, query: str, n: int, rrf_k: int,
              where: Filter = NO_FILTER) -> list[tuple[str, float]]:
        """Hybrid search fused by Qdrant itself (a dense and a BM25 prefetch of ``n`` each, then
        ``Fusion.RRF``), best first. Qdrant scores 1 / (k + 0-based rank); ragstream's search
        scores 1 / (rrf_k + 1-based rank), so Qdrant is asked with k = rrf_k + 1 and the two
        give the same scores for equal weights (tests/test_qdrant_store.py). ragstream's own
        search fuses above the store instead, so every backend's order is computed alike."""
        sparse = query_sparse(query)
        if not sparse[0] or where.doc_ids == frozenset():
            return []
        with self._reading():
            hits = self._fuse(np.asarray(vector, dtype=np.float32).tolist(), sparse, n,
                              rrf_k + 1, search_conditions(where))
        return [(p["chunk_id"], score) for p, score in hits]

    def counts(self) -> Counts:
        with self._reading():
            chunks = self._count(IS_CHUNK)
            documents = self._distinct("doc_id", IS_CHUNK, chunks) if chunks else 0
        return Counts(documents, chunks)

    def scan(self, after: str | None, limit: int) -> list[ChunkUpsert]:
        ids = self._chunk_ids()
        start = 0 if after is None else bisect.bisect_right(ids, after)
        out: list[ChunkUpsert] = []
        while start < len(ids) and len(out) < limit:
            page = ids[start:start + limit - len(out)]
            start += len(page)
            with self._reading():
                found = {p["chunk_id"]: (p, v) for p, v in self._retrieve(
                    [point_id(c) for c in page], None, dense=True)}
            # doc_version on a chunk is its document's applied version (guard.py)
            out += [chunk_upsert(*found[c]) for c in page if c in found]
        return out

    def _chunk_ids(self) -> list[str]:
        """Every chunk id, sorted; kept while the generation stands (a backfill pages through
        a large collection many times)."""
        generation = self.generation()
        cached = self._ids_cache
        if cached is None or cached[0] != generation:
            with self._reading():
                ids = sorted(p["chunk_id"] for p in self._every(IS_CHUNK, ["chunk_id"]))
            self._ids_cache = cached = (generation, ids)
        return cached[1]

    def _every(self, where: tuple[Condition, ...], fields: list[str]) -> Iterator[Payload]:
        offset = None
        while True:
            page, offset = self._scroll(where, fields, offset, _PAGE)
            yield from page
            if offset is None:
                return

    def generation(self) -> str:
        with self._reading():
            found = self._retrieve([COLLECTION_POINT_ID], ["generation"])
        return found[0][0].get("generation", "0") if found else "0"

    # ensure_schema's comparison ---------------------------------------------------------------

    def _check_collection(self, held: Mapping[str, Any] | None, dimension_held: int | None,
                          model_id: str, dimension: int) -> None:
        """Refuse a collection made for another model, dimension or sparse encoding, or not made
        by ragstream at all (no collection point)."""
        wanted = {"model_id": model_id, "dimension": dimension,
                  "sparse_encoding": SPARSE_ENCODING, "schema_version": SCHEMA_VERSION}
        if held is None:
            raise StoreMismatch(
                f"Qdrant {self.where} exists but ragstream did not make it (it has no "
                f"collection point {COLLECTION_POINT_ID}): name another collection with "
                f"RAGSTREAM_STORE_QDRANT_COLLECTION, or remove this one")
        found = {key: held.get(key) for key in wanted}
        if dimension_held is not None:
            found["dimension"] = dimension_held
        if found != wanted:
            differs = ", ".join(f"{k} {found[k]!r} (this deployment: {wanted[k]!r})"
                                for k in wanted if found[k] != wanted[k])
            raise StoreMismatch(
                f"Qdrant {self.where} holds vectors this deployment cannot mix with its own: "
                f"{differs}. Re-embed into a new collection (RAGSTREAM_STORE_QDRANT_COLLECTION), "
                f"or drop this one")
