"""What a route declares it needs: the app's shared state, an API key with a scope (and within
its rate limit), the publisher, the result router, the settings, the request's trace."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.gateway.auth import ApiKey
from ragstream.gateway.results import ResultRouter
from ragstream.gateway.state import Gateway


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayState = Annotated[Gateway, Depends(_gateway)]


def _settings(gateway: GatewayState) -> Settings:
    return gateway.settings


def _publisher(gateway: GatewayState) -> Publisher:
    return gateway.publisher


def _results(gateway: GatewayState) -> ResultRouter:
    return gateway.results


GatewaySettings = Annotated[Settings, Depends(_settings)]
EventPublisher = Annotated[Publisher, Depends(_publisher)]
InferenceResults = Annotated[ResultRouter, Depends(_results)]


def require(scope: str):
    """An API key (``Authorization: Bearer`` or ``X-API-Key``) with ``scope``, within its rate
    limit: 401 without a known key, 403 without the scope, 429 over the limit."""
    async def check(request: Request, gateway: GatewayState,
                    authorization: Annotated[str | None, Header()] = None,
                    x_api_key: Annotated[str | None, Header()] = None) -> ApiKey:
        presented = x_api_key
        if authorization and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        key = gateway.keys.authenticate(presented)
        if key is None:
            raise HTTPException(401, "missing or invalid API key",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.key_id = key.id
        request.state.api_key = key
        if not key.allows(scope):
            raise HTTPException(403, f"this key lacks the {scope!r} scope")
        decision = await gateway.limiter.take(key.id, key.rate_per_s, key.burst)
        if not decision.allowed:
            raise HTTPException(429, "rate limit exceeded",
                                headers={"Retry-After": str(decision.retry_after_s)})
        return key
    return Depends(check)


def _caller(request: Request) -> ApiKey:
    return request.state.api_key


Caller = Annotated[ApiKey, Depends(_caller)]  # the key ``require`` accepted


async def charge(gateway: Gateway, key: ApiKey, units: int, what: str) -> None:
    """Take ``units`` more tokens from the key's bucket for the work a request asks for (an
    event, a text, a KiB of document), before that work starts: one token a request let one
    call buy a 1,000-event batch or a 2,000-chunk document. A request that costs more than the
    key's whole burst can never pass, so it is 413, not a 429 to retry."""
    if units <= 0:
        return
    if units + 1 > key.burst:  # ``require`` took one token for the request itself
        raise HTTPException(413, f"this request costs {units + 1} tokens ({what}), more than "
                                 f"this key's burst of {key.burst}: send less at once")
    decision = await gateway.limiter.take(key.id, key.rate_per_s, key.burst, units)
    if not decision.allowed:
        raise HTTPException(429, f"rate limit exceeded ({units} tokens for {what})",
                            headers={"Retry-After": str(decision.retry_after_s)})


def kib(n_bytes: int) -> int:
    """Started KiB: the token cost of a document or an event."""
    return max(1, -(-n_bytes // 1024))


def traceparent_for(request_id: str) -> str:
    trace_id = uuid.uuid5(uuid.NAMESPACE_URL, request_id).hex
    return f"00-{trace_id}-{trace_id[:16]}-01"


def _trace(request: Request) -> str:
    return (getattr(request.state, "traceparent", None)  # the gateway span, tracing on
            or traceparent_for(request.state.request_id))


Trace = Annotated[str, Depends(_trace)]
