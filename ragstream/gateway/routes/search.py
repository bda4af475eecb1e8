"""``GET /v1/search`` (one query) and ``POST /v1/search`` (a batch): hybrid search over a store
the deployment keeps fresh, through the result cache and, when asked, the re-ranker.

A batch's queries are embedded in one model call and read from the store concurrently
(``Searcher.search_many``). Each query costs a token past the first, and a re-ranked one a
token more: a cross-encoder pass over its candidates is the dearest part of a search.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from ragstream.config import StoreName
from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import Caller, GatewayState, charge, require
from ragstream.gateway.models import (QueryText, SearchBatchIn, SearchBatchOut, SearchHit,
                                      SearchOut, SearchQueryIn, TopK, Weight)
from ragstream.gateway.state import Gateway
from ragstream.vectorstores.base import Filter
from ragstream.vectorstores.search import FusionWeights, SearchRequest, SearchResult

router = APIRouter(tags=["search"], dependencies=[require("search")],
                   route_class=StrictJSONRoute)


def _invalid(loc: tuple, message: str) -> HTTPException:
    # the shape of FastAPI's own 422, which the OpenAPI document declares
    return HTTPException(422, [{"loc": list(loc), "msg": message, "type": "value_error"}])


def _store(gateway: Gateway, name: str | None, loc: tuple) -> str:
    fresh = gateway.settings.store.fresh_stores
    name = name or gateway.settings.store.search
    if name not in fresh:  # a store the reindex does not write is stale, or empty
        raise _invalid(loc, f"this deployment does not keep the store {name!r} fresh; "
                            f"it searches {list(fresh)} (RAGSTREAM_STORE_FRESH)")
    return name


def _reranker(gateway: Gateway) -> bool:
    # from the settings, so a request refused for its cost loads no model
    return gateway.settings.serving.reranker != "none"


def _request(q: SearchQueryIn, reranker: bool, loc: tuple) -> SearchRequest:
    rerank = reranker if q.rerank is None else q.rerank
    if rerank and not reranker:
        raise _invalid((*loc, "rerank"), "no re-ranker is configured on this deployment "
                                         "(RAGSTREAM_SERVING_RERANKER)")
    where = Filter()
    if q.filter is not None:
        where = Filter(None if q.filter.doc_ids is None else frozenset(q.filter.doc_ids),
                       q.filter.metadata)
    return SearchRequest(q.q, q.k, FusionWeights(q.dense, q.sparse), q.per_document, where,
                         rerank)


def _out(query: str, store: str, result: SearchResult) -> SearchOut:
    return SearchOut(query=query, store=store, cached=result.cached, rerank=result.rerank,
                     hits=[SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, score=h.score,
                                     text=h.text, position=h.position, metadata=h.metadata,
                                     rerank_score=h.rerank_score) for h in result.hits])


@router.get("/v1/search", response_model=SearchOut)
async def search(q: Annotated[QueryText, Query()], gateway: GatewayState, key: Caller,
                 k: Annotated[TopK, Query()] = 10,
                 dense: Annotated[Weight, Query()] = 1.0,
                 sparse: Annotated[Weight, Query()] = 1.0,
                 per_document: bool = False,
                 store: StoreName | None = None,
                 rerank: bool | None = None) -> Response:
    """One query. ``store`` is one of the stores the deployment keeps fresh (default: its
    search store); ``rerank`` defaults to whether a re-ranker is configured."""
    if dense + sparse == 0:
        raise _invalid(("query", "dense"), "dense and sparse weights are both 0")
    name = _store(gateway, store, ("query", "store"))
    request = _request(SearchQueryIn(q=q, k=k, dense=dense, sparse=sparse,
                                     per_document=per_document, rerank=rerank),
                       _reranker(gateway), ("query",))
    await charge(gateway, key, int(request.rerank), "re-ranking")
    searcher = await gateway.searcher(name)
    [result] = await asyncio.to_thread(searcher.search_many, [request])
    # serialised once here: returning the model would have FastAPI validate it again
    return Response(_out(q, name, result).model_dump_json(), media_type="application/json")


@router.post("/v1/search", response_model=SearchBatchOut)
async def search_batch(body: SearchBatchIn, gateway: GatewayState, key: Caller) -> Response:
    """Up to ``RAGSTREAM_SERVING_MAX_BATCH_QUERIES`` queries (64 by default) in one call,
    answered in order."""
    limit = gateway.settings.serving.max_batch_queries
    if len(body.queries) > limit:
        raise _invalid(("body", "queries"), f"{len(body.queries)} queries; at most {limit} in "
                                            "one batch (RAGSTREAM_SERVING_MAX_BATCH_QUERIES)")
    name = _store(gateway, body.store, ("body", "store"))
    requests = [_request(q, _reranker(gateway), ("body", "queries", i))
                for i, q in enumerate(body.queries)]
    reranked = sum(r.rerank for r in requests)
    await charge(gateway, key, len(requests) - 1 + reranked,
                 f"{len(requests)} queries, {reranked} re-ranked")
    searcher = await gateway.searcher(name)
    results = await asyncio.to_thread(searcher.search_many, requests)
    out = SearchBatchOut(store=name, results=[_out(q.q, name, r) for q, r in
                                              zip(body.queries, results, strict=True)])
    return Response(out.model_dump_json(), media_type="application/json")
