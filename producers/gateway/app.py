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
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from pydantic import BaseModel, Field

from producers.events import document_deleted, document_upserted
from producers.gateway.auth import ApiKey, KeyStore
from producers.gateway.ratelimit import RateLimiter
from producers.publisher import Publisher, encode, topic_for
from ragstream import tracing
from ragstream.config import Settings
from ragstream.metrics import LATENCY_BUCKETS
from ragstream.errors import SinkUnavailable, TransportUnavailable
from ragstream.stores.redis import connect
from ragstream.transport import open_reader
from ragstream.transport.base import OutMessage
from schemas.catalogue import INFERENCE_REQUESTED, TOPICS, DecodeError, decode
from schemas.envelope import Envelope
from schemas.payloads import DocumentMetadata, DocumentText, DocumentTitle
from schemas.payloads import InferenceCompleted, InferenceRequested, Tensor

log = logging.getLogger("ragstream.gateway")
access_log = logging.getLogger("ragstream.gateway.access")

MAX_EVENTS_PER_REQUEST = 1000
DocId = Annotated[str, Path(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$")]


# request and response bodies ---------------------------------------------------------------------


class EventsIn(BaseModel):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class ItemResult(BaseModel):
    index: int
    id: str | None
    status: Literal["accepted", "rejected"]
    topic: str | None = None
    error: str | None = None


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    results: list[ItemResult]


class DocumentIn(BaseModel):
    text: DocumentText
    title: DocumentTitle = ""
    version: int = Field(ge=0)
    metadata: DocumentMetadata = Field(default_factory=dict)


class Accepted(BaseModel):
    id: str
    topic: str


class SearchHit(BaseModel):
    doc_id: str
    chunk_id: str
    score: float
    text: str


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHit]


class EmbedIn(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256)


class EmbedOut(BaseModel):
    model: str
    dimension: int
    vectors: list[list[float]]


class InferIn(BaseModel):
    model: str = Field(min_length=1, max_length=256)
    model_version: str | None = None
    inputs: list[Tensor] = Field(min_length=1)
    priority: int = Field(default=0, ge=0, le=9)


class TopicOut(BaseModel):
    name: str
    version: int
    events: list[str]
    dead_letter_topic: str
    description: str


class Problem(BaseModel):
    detail: str


# wiring -----------------------------------------------------------------------------------------


class Gateway:
    """What the routes share: settings, publisher, keys, limiter, metrics, lazy models."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = KeyStore(settings)
        self.registry = CollectorRegistry()
        self.requests = Counter("ragstream_gateway_requests", "HTTP requests",
                                ("route", "status"), registry=self.registry)
        self.latency = Histogram("ragstream_gateway_request_seconds", "HTTP request latency",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events_accepted = Counter("ragstream_gateway_events_accepted",
                                       "Events accepted and published", registry=self.registry)
        self.publisher: Publisher | None = None
        self.limiter: RateLimiter | None = None
        self._redis = None
        self._searcher = None
        self._embedder = None
        self._models_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future] = {}
        self._results_task: asyncio.Task | None = None
        self._results_ready = asyncio.Event()  # set while the router reads inference results
        self._results_failure: Exception | None = None  # why the router is not reading now

    async def start(self) -> None:
        tracing.configure_from_env("ragstream-gateway")
        self.keys.reload()
        self._redis = connect(self.settings)
        self.limiter = RateLimiter(self._redis, self.settings.group_prefix)
        self.publisher = Publisher(self.settings)
        await self.publisher.__aenter__()
        self._results_task = asyncio.create_task(self._route_results())

    async def stop(self) -> None:
        if self._results_task is not None:
            self._results_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._results_task
        if self.publisher is not None:
            await self.publisher.__aexit__(None, None, None)
        if self._redis is not None:
            await self._redis.aclose()
        if self._searcher is not None:
            self._searcher.close()

    async def embedder(self):
        async with self._models_lock:
            if self._embedder is None:
                from ragstream.embedders import MiniLMEmbedder

                self._embedder = await asyncio.to_thread(MiniLMEmbedder)
        return self._embedder

    async def searcher(self):
        embedder = await self.embedder()
        async with self._models_lock:
            if self._searcher is None:
                from ragstream.index import Searcher

                self._searcher = Searcher(self.settings, embedder)
        return self._searcher

    async def _route_results(self) -> None:
        """Hand each inference result to the request waiting for its correlation id."""
        spec = TOPICS["inference.results.v1"]
        while True:
            try:  # no group: every gateway replica sees every result, from now on
                async with open_reader(self.settings, [spec.name]) as reader:
                    self._results_failure = None
                    self._results_ready.set()
                    async for record in reader:
                        try:
                            result = decode(spec, record.value, self.settings.max_event_bytes)
                        except DecodeError:
                            continue  # the worker dead-letters what it cannot read
                        future = self._pending.pop(result.data.correlation_id, None)
                        if future is not None and not future.done():
                            future.set_result(result.data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep trying; requests get 503
                self._results_ready.clear()
                self._results_failure = exc
                log.warning("inference results stream failed; retrying",
                            extra={"error": repr(exc)[:300]})
                await asyncio.sleep(1)

    async def infer(self, request: InferenceRequested, trace: str) -> InferenceCompleted:
        if self._results_failure is not None:  # a 503 now, not a 504 after the timeout
            raise TransportUnavailable(f"inference results: {self._results_failure!r}")
        future = asyncio.get_running_loop().create_future()
        self._pending[request.correlation_id] = future
        envelope = Envelope(type=INFERENCE_REQUESTED, source="ragstream/gateway",
                            subject=request.correlation_id, traceparent=trace,
                            data=request.model_dump(mode="json"))
        try:
            async with asyncio.timeout(self.settings.gateway_infer_timeout_s):
                # a result that arrives before the router reads is lost: wait for the router
                await self._results_ready.wait()
                await self.publisher.publish([envelope])
                return await future
        finally:
            self._pending.pop(request.correlation_id, None)


def encode_item(item: dict[str, Any], max_bytes: int) -> tuple[Envelope, OutMessage]:
    """One client item to a message. Current-version items validate once, into their typed
    envelope; anything else takes the Publisher's exact path, which names what is wrong."""
    spec = None
    if isinstance(item.get("type"), str):
        with contextlib.suppress(DecodeError):
            spec = TOPICS[topic_for(item["type"])]
    if spec is not None and item.get("schemaversion", 1) == spec.version:
        try:
            envelope = spec.typed.validate_python(item)
        except ValueError:
            envelope = None
        if envelope is not None:
            value = envelope.model_dump_json(exclude_none=True).encode()
            if len(value) > max_bytes:
                raise DecodeError("oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit")
            return envelope, OutMessage(spec.name, envelope.subject.encode(), value,
                                        envelope.binding_headers())
    envelope = Envelope.model_validate(item)
    return envelope, encode(envelope, None, max_bytes)


def traceparent_for(request_id: str) -> str:
    trace_id = uuid.uuid5(uuid.NAMESPACE_URL, request_id).hex
    return f"00-{trace_id}-{trace_id[:16]}-01"


def create_app(settings: Settings | None = None) -> FastAPI:
    gateway = Gateway(settings or Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.keys.reload)
        yield
        await gateway.stop()

    app = FastAPI(title="ragstream gateway", version="1.0.0", lifespan=lifespan,
                  description=__doc__, responses={401: {"model": Problem}, 403: {"model": Problem},
                                                  413: {"model": Problem},
                                                  429: {"model": Problem}})
    app.state.gateway = gateway

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not JSON
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "the body is not valid JSON",
                                             "type": "json_invalid"}]}, status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(SinkUnavailable)
    @app.exception_handler(TransportUnavailable)
    @app.exception_handler(ConnectionError)
    async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("broker unavailable", extra={"error": repr(exc)[:300]})
        return JSONResponse({"detail": "the event broker is unavailable; retry later"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.middleware("http")
    async def limits_and_access_log(request: Request, call_next):
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id[:128]
        request.state.key_id = None
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit()
                                   or int(length) > gateway.settings.gateway_max_body_bytes):
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

    def require(scope: str):
        async def check(request: Request,
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
            if not key.allows(scope):
                raise HTTPException(403, f"this key lacks the {scope!r} scope")
            decision = await gateway.limiter.take(key.id, key.rate_per_s, key.burst)
            if not decision.allowed:
                raise HTTPException(429, "rate limit exceeded",
                                    headers={"Retry-After": str(decision.retry_after_s)})
            return key
        return Depends(check)

    def trace(request: Request) -> str:
        return (getattr(request.state, "traceparent", None)  # the gateway span, tracing on
                or traceparent_for(request.state.request_id))

    @app.post("/v1/events", response_model=EventsOut, tags=["publish"],
              dependencies=[require("publish")])
    async def publish_events(body: EventsIn, request: Request) -> Response:
        """Validate a batch of envelopes; publish the valid ones; report on each item."""
        results, messages = [], []
        for i, item in enumerate(body.events):
            try:
                if not item.get("traceparent"):  # a client's own trace wins
                    item["traceparent"] = trace(request)
                envelope, message = encode_item(item, gateway.settings.max_event_bytes)
            except (ValueError, DecodeError) as exc:
                results.append(ItemResult(index=i, id=str(item.get("id"))[:256] if
                                          isinstance(item, dict) and item.get("id") else None,
                                          status="rejected", error=str(exc)[:500]))
                continue
            messages.append(message)
            results.append(ItemResult(index=i, id=envelope.id, status="accepted",
                                      topic=message.topic))
        await gateway.publisher.send_raw(messages)
        gateway.events_accepted.inc(len(messages))
        out = EventsOut(accepted=len(messages), rejected=len(results) - len(messages),
                        results=results)
        # serialised once here: returning the model would have FastAPI validate it again
        return Response(out.model_dump_json(), media_type="application/json")

    @app.put("/v1/documents/{doc_id}", response_model=Accepted, status_code=202,
             tags=["publish"], dependencies=[require("publish")])
    async def put_document(doc_id: DocId,
                           body: DocumentIn, request: Request) -> Accepted:
        envelope = document_upserted(doc_id, body.text, version=body.version, title=body.title,
                                     source="ragstream/gateway", metadata=body.metadata,
                                     traceparent=trace(request))
        await gateway.publisher.publish([envelope])
        gateway.events_accepted.inc()
        return Accepted(id=envelope.id, topic="documents.v1")

    @app.delete("/v1/documents/{doc_id}", response_model=Accepted, status_code=202,
                tags=["publish"], dependencies=[require("publish")])
    async def delete_document(doc_id: DocId,
                              version: Annotated[int, Query(ge=0)]) -> Accepted:
        envelope = document_deleted(doc_id, version=version, source="ragstream/gateway")
        await gateway.publisher.publish([envelope])
        gateway.events_accepted.inc()
        return Accepted(id=envelope.id, topic="documents.v1")

    @app.get("/v1/search", response_model=SearchOut, tags=["search"],
             dependencies=[require("search")])
    async def search(q: Annotated[str, Query(min_length=1, max_length=2000)],
                     k: Annotated[int, Query(ge=1, le=100)] = 10) -> SearchOut:
        searcher = await gateway.searcher()
        hits = await asyncio.to_thread(searcher.search, q, k)
        return SearchOut(query=q, hits=[SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id,
                                                  score=h.score, text=h.text) for h in hits])

    @app.post("/v1/embed", response_model=EmbedOut, tags=["infer"],
              dependencies=[require("infer")])
    async def embed(body: EmbedIn) -> EmbedOut:
        embedder = await gateway.embedder()
        vectors = await asyncio.to_thread(embedder.embed, body.texts)
        return EmbedOut(model=embedder.model_id, dimension=embedder.dimension,
                        vectors=vectors.tolist())

    @app.post("/v1/infer", response_model=InferenceCompleted, tags=["infer"],
              dependencies=[require("infer")], responses={504: {"model": Problem}})
    async def infer(body: InferIn, request: Request) -> InferenceCompleted:
        """Request-reply over inference.requests.v1 and inference.results.v1."""
        req = InferenceRequested(correlation_id=uuid.uuid4().hex, model=body.model,
                                 model_version=body.model_version, inputs=body.inputs,
                                 priority=body.priority,
                                 deadline=datetime.fromtimestamp(
                                     time.time() + gateway.settings.gateway_infer_timeout_s, UTC))
        try:
            return await gateway.infer(req, trace(request))
        except TimeoutError:
            raise HTTPException(504, "no inference result before the timeout") from None

    @app.get("/v1/topics", response_model=list[TopicOut], tags=["catalogue"],
             dependencies=[require("search")])
    async def topics() -> list[TopicOut]:
        return [TopicOut(name=s.name, version=s.version, events=list(s.events),
                         dead_letter_topic=s.dlq, description=s.description)
                for s in TOPICS.values()]

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"model": Problem}})
    async def readyz() -> dict[str, str]:
        try:
            await asyncio.wait_for(gateway._redis.ping(), 2)
        except Exception as exc:
            raise HTTPException(503, f"redis unreachable: {type(exc).__name__}") from None
        return {"status": "ready"}

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)

    return app
