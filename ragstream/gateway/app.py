"""The HTTP gateway: ragstream's API, versioned under /v1.

Every route but the probes needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key``)
with the route's scope: no key is 401, a key without the scope is 403. Each key has a token
bucket in Redis (429 with Retry-After). Bodies over the limit are 413, malformed ones 422 with
field errors; nothing invalid reaches a topic. Each request's id becomes the trace id of the
events it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragstream.config import Settings
from ragstream.errors import WiringError, unavailable_types
from ragstream.gateway.middleware import (event_refused, http_error, invalid_request,
                                          limits_and_access_log, misconfigured, service_unavailable)
from ragstream.gateway.models import Problem
from ragstream.gateway.routes import (catalogue, documents, embed, embeddings, events, infer,
                                     probes, search)
from ragstream.gateway.state import Gateway
from schemas.catalogue import DecodeError

# in this order in the OpenAPI document
ROUTERS = (events.router, documents.router, search.router, embed.router, embeddings.router,
           infer.router, catalogue.router, probes.router)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gateway: Gateway = app.state.gateway
    await gateway.start()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.keys.reload)
    yield
    await gateway.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="ragstream gateway", version="1.0.0", lifespan=lifespan,
                  description=__doc__, responses={401: {"model": Problem}, 403: {"model": Problem},
                                                  413: {"model": Problem},
                                                  429: {"model": Problem}})
    app.state.gateway = Gateway(settings or Settings())
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DecodeError, event_refused)
    app.add_exception_handler(WiringError, misconfigured)
    # the broker or a store is down: the core's Unavailable, and the client libraries' own
    # errors that the stores declare (state.py imports ragstream.stores.redis, so Redis' are in)
    for unavailable in unavailable_types():
        app.add_exception_handler(unavailable, service_unavailable)
    app.middleware("http")(limits_and_access_log)
    for router in ROUTERS:
        app.include_router(router)
    return app
