"""Around every request: body limits, the request id, the gateway's trace span, metrics and the
access log; and the error answers (422 for bytes that are not JSON, 503 when the broker is down)."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragstream import tracing
from ragstream.gateway.dependencies import traceparent_for

log = logging.getLogger("ragstream.gateway")
access_log = logging.getLogger("ragstream.gateway.access")


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not JSON
        return JSONResponse({"detail": [{"loc": ["body"], "msg": "the body is not valid JSON",
                                         "type": "json_invalid"}]}, status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable", extra={"error": repr(exc)[:300]})
    return JSONResponse({"detail": "the event broker is unavailable; retry later"},
                        status_code=503, headers={"Retry-After": "5"})


async def limits_and_access_log(request: Request, call_next):
    gateway = request.app.state.gateway
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request.state.request_id = request_id[:128]
    request.state.key_id = None
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit()
                               or int(length) > gateway.settings.gateway.max_body_bytes):
        response = JSONResponse({"detail": "request body over the limit"}, status_code=413)
    elif length is None and request.method in ("POST", "PUT", "PATCH"):
        response = JSONResponse({"detail": "a Content-Length header is required"},
                                status_code=411)
    elif tracing.ENABLED:  # a caller's traceparent is the parent; else the request id's trace
        with tracing.server_span(
                f"gateway {request.method} {request.url.path}",
                request.headers.get("traceparent"),
                traceparent_for(request.state.request_id).split("-")[1],
                **{"http.request.method": request.method}) as span:
            request.state.traceparent = tracing.traceparent_of(span)
            response = await call_next(request)
            span.set_attribute("http.response.status_code", response.status_code)
            if (matched := request.scope.get("route")) is not None:  # low-cardinality name
                span.update_name(f"gateway {request.method} {matched.path}")
                span.set_attribute("http.route", matched.path)
    else:
        response = await call_next(request)
    route = request.scope.get("route")
    path = route.path if route is not None else "unmatched"
    elapsed = time.perf_counter() - started
    gateway.requests.labels(path, str(response.status_code)).inc()
    gateway.latency.labels(path).observe(elapsed)
    response.headers["X-Request-ID"] = request.state.request_id
    access_log.info("request", extra={
        "request_id": request.state.request_id, "method": request.method, "path": path,
        "status": response.status_code, "ms": round(elapsed * 1000, 2),
        "key_id": request.state.key_id})
    return response
