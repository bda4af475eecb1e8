"""Around every request: body limits, the request id, the gateway's trace span, metrics and the
access log; and the error answers (422 for bytes that are not JSON or fail validation, 503 when
the broker or Redis is down)."""

from __future__ import annotations

import logging
import math
import time
import uuid

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragstream import tracing
from ragstream.errors import TransportUnavailable, Unavailable, WiringError
from ragstream.gateway.dependencies import traceparent_for
from schemas.catalogue import DecodeError

log = logging.getLogger("ragstream.gateway")
access_log = logging.getLogger("ragstream.gateway.access")


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not JSON
        why = f": {str(exc.__cause__)[:200]}" if exc.__cause__ is not None else ""
        return JSONResponse({"detail": [{"loc": ["body"], "type": "json_invalid",
                                         "msg": "the body is not valid JSON" + why}]},
                            status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def _echoable(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (
        isinstance(value, str) and len(value) <= 256)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, echoing an input only when it is a short string or a number: the default
    echoed whole inputs (a 2 MB text, a list nested 900 deep) back to the client."""
    errors = [{name: value for name, value in error.items()
               if name != "input" or _echoable(value)} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def event_refused(request: Request, exc: DecodeError) -> JSONResponse:
    """An event built from a client's input that its topic refuses. Over RAGSTREAM_MAX_EVENT_BYTES
    is 413: a document or an inference request under the 4 MiB body limit can make an event
    over the 1 MiB event limit, and the Publisher's refusal was a 500."""
    if exc.reason == "oversized":
        return JSONResponse({"detail": f"the event is too large: {exc.message} "
                                       "(RAGSTREAM_MAX_EVENT_BYTES); send less at once"},
                            status_code=413)
    return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc), "type": exc.reason}]},
                        status_code=422)


def _what_is_down(exc: Exception) -> str:
    if isinstance(exc, TransportUnavailable):
        return "the event broker"
    if type(exc).__module__.startswith("redis"):  # the rate limiter's and the index's store
        return "Redis"
    return "a store or the event broker"


async def service_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A store or the broker is down (any of ``ragstream.errors.unavailable_types()``): 503,
    retry later. A down Redis in the rate limiter used to be a 500."""
    what = _what_is_down(exc)
    log.warning("service unavailable", extra={"service": what, "error": repr(exc)[:300]})
    retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
    return JSONResponse({"detail": f"{what} is unavailable; retry later"}, status_code=503,
                        headers={"Retry-After": str(max(1, math.ceil(retry_after or 5)))})


async def misconfigured(request: Request, exc: WiringError) -> JSONResponse:
    """The deployment cannot serve this request from this process, as configured (the embedded
    Qdrant engine is owned by the reindex_qdrant worker's process, say): 503 with the reason, not
    a bare 500. Retrying will not help until the configuration changes."""
    log.error("misconfigured", extra={"error": repr(exc)[:500], "path": request.url.path})
    return JSONResponse({"detail": f"this gateway cannot serve that as configured: {exc}"},
                        status_code=503)


async def limits_and_access_log(request: Request, call_next):
    gateway = request.app.state.gateway
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id")
    if not (request_id and request_id.isascii() and request_id.isprintable()):
        request_id = uuid.uuid4().hex  # it is echoed in a header and logged: printable only
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
            # the route's template, a low-cardinality name: path_format is /v1/documents/{doc_id},
            # where path holds the converter ({doc_id:anyid})
            if (matched := request.scope.get("route")) is not None:
                span.update_name(f"gateway {request.method} {matched.path_format}")
                span.set_attribute("http.route", matched.path_format)
    else:
        response = await call_next(request)
    route = request.scope.get("route")
    path = route.path_format if route is not None else "unmatched"
    elapsed = time.perf_counter() - started
    gateway.requests.labels(path, str(response.status_code)).inc()
    gateway.latency.labels(path).observe(elapsed)
    response.headers["X-Request-ID"] = request.state.request_id
    access_log.info("request", extra={
        "request_id": request.state.request_id, "method": request.method, "path": path,
        "status": response.status_code, "ms": round(elapsed * 1000, 2),
        "key_id": request.state.key_id})
    return response
