"""``POST /v1/infer``: request-reply with the batch inference worker, over its topics."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import GatewaySettings, InferenceResults, Trace, require
from ragstream.gateway.models import InferIn, Problem
from schemas.payloads import InferenceCompleted, InferenceRequested

router = APIRouter(tags=["infer"], dependencies=[require("infer")],
                   route_class=StrictJSONRoute)


@router.post("/v1/infer", response_model=InferenceCompleted,
             responses={504: {"model": Problem}})
async def infer(body: InferIn, settings: GatewaySettings, results: InferenceResults,
                trace: Trace) -> InferenceCompleted:
    """Request-reply over inference.requests.v1 and inference.results.v1."""
    req = InferenceRequested(correlation_id=uuid.uuid4().hex, model=body.model,
                             model_version=body.model_version, inputs=body.inputs,
                             priority=body.priority,
                             deadline=datetime.fromtimestamp(
                                 time.time() + settings.gateway.infer_timeout_s, UTC))
    try:
        return await results.infer(req, trace)
    except TimeoutError:
        raise HTTPException(504, "no inference result before the timeout") from None
