"""``POST /v1/embed``: embeddings of a few texts, computed in the gateway."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import Caller, GatewayState, charge, require
from ragstream.gateway.models import EmbedIn, EmbedOut

router = APIRouter(tags=["infer"], dependencies=[require("infer")],
                   route_class=StrictJSONRoute)


@router.post("/v1/embed", response_model=EmbedOut)
async def embed(body: EmbedIn, gateway: GatewayState, key: Caller) -> EmbedOut:
    await charge(gateway, key, len(body.texts) - 1, f"{len(body.texts)} texts")
    embedder = await gateway.embedder()
    vectors = await asyncio.to_thread(embedder.embed, body.texts)
    return EmbedOut(model=embedder.model_id, dimension=embedder.dimension,
                    vectors=vectors.tolist())
