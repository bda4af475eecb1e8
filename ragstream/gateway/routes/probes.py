"""``/healthz``, ``/readyz`` and ``/metrics``: no key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragstream.gateway.dependencies import GatewayState
from ragstream.gateway.models import Problem

router = APIRouter(tags=["probes"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Problem}})
async def readyz(gateway: GatewayState) -> dict[str, str]:
    try:
        await asyncio.wait_for(gateway.redis.ping(), 2)
    except Exception as exc:
        raise HTTPException(503, f"redis unreachable: {type(exc).__name__}") from None
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(gateway: GatewayState) -> Response:
    return Response(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)
