"""``GET /v1/search``: hybrid search over the index."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from ragstream.gateway.dependencies import GatewayState, require
from ragstream.gateway.models import SearchHit, SearchOut

router = APIRouter(tags=["search"], dependencies=[require("search")])


@router.get("/v1/search", response_model=SearchOut)
async def search(q: Annotated[str, Query(min_length=1, max_length=2000)],
                 gateway: GatewayState,
                 k: Annotated[int, Query(ge=1, le=100)] = 10) -> SearchOut:
    searcher = await gateway.searcher()
    hits = await asyncio.to_thread(searcher.search, q, k)
    return SearchOut(query=q, hits=[SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id,
                                              score=h.score, text=h.text) for h in hits])
