"""``POST /v1/infer``: request-reply with the batch inference worker, over its topics."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import (Caller, GatewayState, InferenceResults, Trace,
                                            charge, kib, require)
from ragstream.gateway.models import InferIn, Problem
from schemas.payloads import InferenceCompleted, InferenceRequested

router = APIRouter(tags=["infer"], dependencies=[require("infer")],
                   route_class=StrictJSONRoute)


@router.post("/v1/infer", response_model=InferenceCompleted,
             responses={504: {"model": Problem}})
async def infer(body: InferIn, gateway: GatewayState, results: InferenceResults,
                trace: Trace, key: Caller) -> InferenceCompleted:
    """Request-reply over inference.requests.v1 and inference.results.v1. The request costs a
    token per started KiB of its event past the first, as on ``/v1/events``: one token used to
    buy a request of any size up to the event limit."""
    settings = gateway.settings
    req = InferenceRequested(correlation_id=uuid.uuid4().hex, model=body.model,
                             model_version=body.model_version, inputs=body.inputs,
                             priority=body.priority,
                             deadline=datetime.fromtimestamp(
                                 time.time() + settings.gateway.infer_timeout_s, UTC))
    # over the event limit is 413 (middleware.event_refused), before the key pays for it
    message = results.request_message(req, trace)
    await charge(gateway, key, kib(len(message.value)) - 1, "the request's size")
    try:
        return await results.infer(req, message)
    except TimeoutError:
        raise HTTPException(504, "no inference result before the timeout") from None
