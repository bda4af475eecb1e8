"""Qdrant as a server (qdrant-client over REST): what a team runs in production, sharded and
replicated; the collection is ``RAGSTREAM_STORE_QDRANT_COLLECTION`` (default
``<group_prefix>_chunks``) at ``RAGSTREAM_STORE_QDRANT_URL``.

The writes and reads are the ones the embedded store sends (``store.QdrantStore``, the same
mapping); what differs is concurrency. Qdrant has no multi-point transactions, so here:

- a batch goes out as ONE ordered ``batch_update_points`` request (``ordering=strong``: through
  each shard's leader, so conditional updates apply in one order on every replica);
- every write is conditional on the server (``update_filter`` on upserts, a filter on deletes):
  a point whose stored ``doc_version`` is newer than the version written is left alone, so an
  older writer cannot overwrite a chunk a newer writer has written or carried forward;
- what is NOT covered: between a writer's reads (the guard's plan) and its request, another
  writer of the SAME document may act. A stale writer may then re-insert a chunk that a newer
  version deleted (an insert has no stored point to be conditional on), or overwrite a chunk the
  newer writer found unchanged before its version was carried onto it. In ragstream one
  partition, so one worker, owns a document's events; two overlap only for the moments of a
  group rebalance, and a replay of the newer event repairs either case;
- readers may see a batch half applied (a document with some chunks new, some old) while the
  request runs.

Connection errors and 5xx/429 answers are ``StoreUnavailable``: the worker backs off and
retries the batch, which the guard makes safe. The API key (RAGSTREAM_STORE_QDRANT_API_KEY or
``..._FILE``) goes only into the client; it is in no repr and no message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ragstream.config import Settings
from ragstream.errors import declare_unavailable
from ragstream.vectorstores.base import StoreUnavailable
from ragstream.vectorstores.qdrant.mapping import (COLLECTION_POINT_ID, DENSE, INTEGER_INDEXES,
                                                   IS_CHUNK, KEYWORD_INDEXES, SHOWN, SPARSE,
                                                   AtMost, Below, Condition, Delete, HasIds, Match,
                                                   MatchAny, PointSpec, SetPayload, Step, Upsert,
                                                   collection_point)
from ragstream.vectorstores.qdrant.store import Payload, QdrantStore, Sparse

# the client's own "down" errors: backpressure for the worker runtime, never a dead letter. The
# client wraps every transport error (refused, timed out, reset) in ResponseHandlingException,
# and also a response it cannot parse (a proxy's error page): retrying that is right too
declare_unavailable(ResponseHandlingException, ResourceExhaustedResponse)

T = TypeVar("T")
_MISSING = object()


# translation of the mapping's plain values into qdrant-client's models -------------------------


def client_point(spec: PointSpec) -> models.PointStruct:
    vectors: dict[str, Any] = {}
    if spec.dense is not None:
        vectors[DENSE] = spec.dense
    if spec.sparse is not None:
        vectors[SPARSE] = models.SparseVector(indices=spec.sparse[0], values=spec.sparse[1])
    return models.PointStruct(id=spec.id, vector=vectors, payload=spec.payload)


def client_filter(conditions: tuple[Condition, ...]) -> models.Filter | None:
    return models.Filter(must=[_client_condition(c) for c in conditions]) if conditions else None


def _client_condition(c: Condition):
    if isinstance(c, Match):
        return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.value))
    if isinstance(c, MatchAny):
        return models.FieldCondition(key=c.key, match=models.MatchAny(any=list(c.values)))
    if isinstance(c, AtMost):
        return models.FieldCondition(key=c.key, range=models.Range(lte=c.bound))
    if isinstance(c, Below):
        return models.FieldCondition(key=c.key, range=models.Range(lt=c.bound))
    assert isinstance(c, HasIds)
    return models.HasIdCondition(has_id=list(c.ids))


def client_update(step: Step):
    if isinstance(step, Upsert):
        return models.UpsertOperation(upsert=models.PointsList(
            points=[client_point(p) for p in step.points],
            update_filter=client_filter(step.only_if)))
    if isinstance(step, Delete):
        return models.DeleteOperation(delete=models.FilterSelector(
            filter=client_filter(step.where)))
    assert isinstance(step, SetPayload)
    return models.SetPayloadOperation(set_payload=models.SetPayload(
        payload=step.payload, filter=client_filter(step.where)))


def collection_layout(settings: Settings, dimension: int) -> dict[str, Any]:
    """``create_collection``'s arguments for a new collection."""
    s = settings.store
    return {"vectors_config": {DENSE: models.VectorParams(size=dimension,
                                                          distance=models.Distance.COSINE)},
            "sparse_vectors_config": {SPARSE: models.SparseVectorParams(
                modifier=models.Modifier.IDF)},
            "shard_number": s.qdrant_shard_number,
            "replication_factor": s.qdrant_replication_factor,
            "write_consistency_factor": s.qdrant_write_consistency_factor}


# the store ---------------------------------------------------------------------------------------


class QdrantServerStore(QdrantStore):
    def __init__(self, settings: Settings):
        s = settings.store
        assert s.qdrant_url, "a server store needs RAGSTREAM_STORE_QDRANT_URL"
        self._settings = settings
        self._url = s.qdrant_url
        self.collection = s.name_in(settings, "qdrant")
        self.where = f"collection {self.collection!r} at {self._url}"
        key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
        self._client = QdrantClient(url=self._url, api_key=key or None, prefer_grpc=False,
                                    timeout=math.ceil(s.qdrant_timeout_s))

    def __repr__(self) -> str:
        return f"QdrantServerStore({self._url!r}, {self.collection!r})"

    def close(self) -> None:
        self._client.close()

    def drop(self) -> None:
        self._call(lambda: self._client.delete_collection(self.collection))
        self.close()

    def ensure_schema(self, model_id: str, dimension: int) -> None:
        c, name = self._client, self.collection
        if not self._call(lambda: c.collection_exists(name)):
            try:
                self._call(lambda: c.create_collection(
                    name, **collection_layout(self._settings, dimension)))
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # 409: another worker created it first
                    raise
        params = self._call(lambda: c.get_collection(name)).config.params
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        sparse = params.sparse_vectors or {}
        size = vectors[DENSE].size if DENSE in vectors else None
        if SPARSE not in sparse or sparse[SPARSE].modifier != models.Modifier.IDF:
            size = None  # not our layout: the check below names it
        found = self._retrieve([COLLECTION_POINT_ID], None)
        if not found and size == dimension and self._call(
                lambda: c.count(name, exact=True).count) == 0:
            for field in KEYWORD_INDEXES:
                self._call(lambda f=field: c.create_payload_index(
                    name, f, models.PayloadSchemaType.KEYWORD))
            for field in INTEGER_INDEXES:
                self._call(lambda f=field: c.create_payload_index(
                    name, f, models.PayloadSchemaType.INTEGER))
            # insert only (the point is no chunk, so the condition never lets it be replaced):
            # of two workers starting together, the first one's point stands
            self._execute([Upsert((collection_point(model_id, dimension),), IS_CHUNK)])
            found = self._retrieve([COLLECTION_POINT_ID], None)
        self._check_collection(found[0][0] if found else None, size or -1, model_id, dimension)

    # engine primitives -------------------------------------------------------------------------

    def _call(self, request: Callable[[], T], missing: Any = _MISSING) -> T:
        """Run a request: an overloaded or failing server is ``StoreUnavailable``; with
        ``missing``, a collection that does not exist yet reads as that value."""
        try:
            return request()
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            if status == 404 and missing is not _MISSING:
                return missing
            if status == 429 or status >= 500:
                raise StoreUnavailable(f"Qdrant {self.where} answered {status}") from exc
            raise

    def _execute(self, steps: list[Step]) -> None:
        self._call(lambda: self._client.batch_update_points(
            self.collection, [client_update(s) for s in steps], wait=True,
            ordering=models.WriteOrdering.STRONG))

    def _retrieve(self, ids: list[str], fields: list[str] | None,
                  dense: bool = False) -> list[tuple[Payload, list[float] | None]]:
        if not ids:
            return []
        # the guard's reads ask a majority of replicas, so a lagging one cannot hide a version
        records = self._call(lambda: self._client.retrieve(
            self.collection, ids, with_payload=True if fields is None else fields,
            with_vectors=[DENSE] if dense else False,
            consistency=models.ReadConsistencyType.MAJORITY), missing=[])
        return [(r.payload or {}, r.vector.get(DENSE) if dense and r.vector else None)
                for r in records]

    def _scroll(self, where: tuple[Condition, ...], fields: list[str], offset: Any,
                limit: int) -> tuple[list[Payload], Any]:
        records, next_offset = self._call(lambda: self._client.scroll(
            self.collection, scroll_filter=client_filter(where), limit=limit, offset=offset,
            with_payload=fields, with_vectors=False,
            consistency=models.ReadConsistencyType.MAJORITY), missing=([], None))
        return [r.payload or {} for r in records], next_offset

    def _search(self, dense: list[float] | None, sparse: Sparse | None, n: int,
                where: tuple[Condition, ...]) -> tuple[list[Payload], list[Payload]]:
        flt = client_filter(where)
        asked = [(name, vector) for name, vector in ((DENSE, dense), (SPARSE, sparse))
                 if vector is not None]
        requests = [models.QueryRequest(
            query=models.SparseVector(indices=vector[0], values=vector[1])
            if name == SPARSE else vector, using=name, filter=flt, limit=n,
            with_payload=SHOWN, with_vector=False) for name, vector in asked]
        answers = self._call(lambda: self._client.query_batch_points(self.collection, requests),
                             missing=[models.QueryResponse(points=[]) for _ in requests])
        found = {name: [p.payload for p in answer.points]
                 for (name, _), answer in zip(asked, answers, strict=True)}
        return found.get(DENSE, []), found.get(SPARSE, [])

    def _fuse(self, dense: list[float], sparse: Sparse, n: int, k: int,
              where: tuple[Condition, ...]) -> list[tuple[Payload, float]]:
        flt = client_filter(where)
        answer = self._call(lambda: self._client.query_points(
            self.collection, query=models.RrfQuery(rrf=models.Rrf(k=k)), limit=n,
            with_payload=SHOWN, prefetch=[
                models.Prefetch(query=dense, using=DENSE, filter=flt, limit=n),
                models.Prefetch(query=models.SparseVector(indices=sparse[0], values=sparse[1]),
                                using=SPARSE, filter=flt, limit=n)]),
            missing=models.QueryResponse(points=[]))
        return [(p.payload, p.score) for p in answer.points]

    def _count(self, where: tuple[Condition, ...]) -> int:
        return self._call(lambda: self._client.count(
            self.collection, count_filter=client_filter(where), exact=True).count, missing=0)

    def _distinct(self, key: str, where: tuple[Condition, ...], limit: int) -> int:
        answer = self._call(lambda: self._client.facet(
            self.collection, key, facet_filter=client_filter(where), limit=limit, exact=True),
            missing=models.FacetResponse(hits=[]))
        return len(answer.hits)
