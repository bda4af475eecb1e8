"""Batch inference: inference.requests.v1 in, one result per request out (to its ``reply_to``).

    requests -> (expired? answer "expired", never sent) -> validate against the model's metadata
             -> group per model+version -> micro-batches of at most max_batch_size, by priority
             -> Triton (retries, circuit breaker, fallback model) -> one result per request

Micro-batching: the runtime lets a consumed batch fill for ``max_delay_ms`` (the smallest of the
configured models') or until ``max_batch_size`` requests are in hand; each model's requests are
then cut into batches no larger than its own ``max_batch_size`` nor the max batch size Triton
reports for the model. Per model settings come from ``RAGSTREAM_INFERENCE_MODELS`` (JSON) or the
file ``RAGSTREAM_INFERENCE_MODELS_PATH``, re-read when it changes (configurable at run time).

Failures:
- a malformed request (unknown model or version, missing or unknown input, wrong dtype or shape,
  wrong number of values) gets an ``invalid`` result and goes to the dead-letter topic; its
  batch-mates are answered as usual. A batch Triton itself refuses is split in halves until the
  request at fault stands alone.
- transient Triton errors (down, queue full, timeout) retry with backoff; then the whole consumed
  batch is rewound and its partitions paused (backpressure): nothing is lost, and nothing was
  published for it, so nothing is duplicated.
- a circuit breaker per model stops calling a failing model for ``inference_breaker_reset_s``;
  while it is open, requests go to the model's ``fallback`` if one is configured, else backpressure.
- at most ``max_inflight`` Triton requests per model are in flight, never more than the model's
  queue limit (``max_queue_size`` of its queue policy); "queue full" is a transient error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from ragstream.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from ragstream.runtime import Batch, Event, Worker, WorkerContext
from ragstream.runtime.retry import backoff_s
from ragstream.triton.client import (CircuitBreaker, ModelInfo, TritonClient, TritonRejected,
                                     TritonUnavailable, to_json, to_numpy)
from schemas.catalogue import INFERENCE_COMPLETED, TOPICS
from schemas.payloads import InferenceCompleted, InferenceRequested, Tensor

log = logging.getLogger(__name__)

RESULTS_TOPIC = "inference.results.v1"


@dataclass(frozen=True)
class ModelPolicy:
    max_batch_size: int
    max_delay_ms: float
    max_inflight: int
    fallback: str | None = None


@dataclass
class _Item:
    event: Event
    request: InferenceRequested
    arrays: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] | None = None
    error: tuple[str, str] | None = None  # (status, message)
    served_by: str | None = None
    version: str | None = None


@dataclass
class _ModelState:
    breaker: CircuitBreaker
    gate: asyncio.Semaphore
    inflight: int = field(default=0)


class BatchInferenceWorker(Worker):
    name = "batch_inference"
    consumes = ("inference.requests.v1",)
    emits = (RESULTS_TOPIC,)
    max_batch_records = 512

    def __init__(self, client: TritonClient | None = None):
        self.client = client
        # models Triton has described to us: only these name a metrics series, so requests for
        # made-up models cannot grow the label set without bound (they count as "other")
        self._known: set[str] = set()

    async def setup(self, ctx: WorkerContext) -> None:
        s = self.settings = ctx.settings
        self.sinks = {}
        if self.client is None:
            self.client = TritonClient(s)
        self._models: dict[str, _ModelState] = {}
        self._overrides: dict[str, dict] = {}
        self._overrides_mtime: float | None = None
        self._load_overrides(force=True)
        r = ctx.metrics.registry
        self.m_batch = Histogram("ragstream_inference_batch_size", "Requests per Triton call",
                                 ("model",), buckets=BATCH_BUCKETS, registry=r)
        self.m_wait = Histogram("ragstream_inference_queue_wait_seconds",
                                "Request event time to its Triton call", ("model",),
                                buckets=LATENCY_BUCKETS, registry=r)
        self.m_latency = Histogram("ragstream_inference_triton_seconds",
                                   "Triton call latency, per batch", ("model",),
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.m_results = Counter("ragstream_inference_results", "Results, by status",
                                 ("model", "status"), registry=r)
        self.m_retries = Counter("ragstream_inference_retries",
                                 "Triton calls retried after a transient error", ("model",),
                                 registry=r)
        self.m_fallback = Counter("ragstream_inference_fallbacks",
                                  "Batches sent to the fallback model", ("model", "fallback"),
                                  registry=r)
        self.m_breaker = Gauge("ragstream_inference_breaker_open",
                               "1 while the model's circuit breaker is open", ("model",),
                               registry=r)

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.close()

    # per-model settings ------------------------------------------------------------------------

    def _load_overrides(self, force: bool = False) -> None:
        s = self.settings
        path: Path | None = s.inference_models_path
        if path is not None:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                mtime = None
            if not force and mtime == self._overrides_mtime:
                return
            self._overrides_mtime = mtime
            raw = path.read_text() if mtime is not None else "{}"
        elif force:
            raw = s.inference_models
        else:
            return
        try:
            overrides = json.loads(raw or "{}")
            if not isinstance(overrides, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            log.error("ignoring bad per-model inference settings", extra={"error": str(exc)})
            return
        self._overrides = overrides
        policies = [self.policy(m) for m in overrides if m != "*"] + [self.policy("")]
        self.fill_window_ms = min(p.max_delay_ms for p in policies)
        self.fill_records = max(p.max_batch_size for p in policies)
        for model, state in list(self._models.items()):  # new inflight limits apply from now on
            if state.inflight == 0:
                self._models.pop(model)

    def policy(self, model: str) -> ModelPolicy:
        s = self.settings
        o = {**self._overrides.get("*", {}), **self._overrides.get(model, {})}
        return ModelPolicy(max_batch_size=int(o.get("max_batch_size", s.inference_max_batch_size)),
                           max_delay_ms=float(o.get("max_delay_ms", s.inference_max_delay_ms)),
                           max_inflight=int(o.get("max_inflight", s.inference_max_inflight)),
                           fallback=o.get("fallback"))

    def _state(self, info: ModelInfo) -> _ModelState:
        state = self._models.get(info.name)
        if state is None:
            inflight = self.policy(info.name).max_inflight
            if info.max_queue_size:  # never queue more at Triton than its queue policy allows
                inflight = min(inflight, info.max_queue_size)
            state = self._models[info.name] = _ModelState(
                CircuitBreaker(self.settings.inference_breaker_failures,
                               self.settings.inference_breaker_reset_s),
                asyncio.Semaphore(inflight))
            self._zero_series(info.name)
        return state

    def _zero_series(self, model: str) -> None:
        """A model's labelled series start at 0 once it is called, instead of appearing at the
        first retry, fallback or error: rate() and the dashboard's panels see 0, not no data."""
        self.m_retries.labels(model)
        self.m_breaker.labels(model)  # a series made here is 0; an existing one keeps its value
        for status in ("ok", "expired", "invalid", "failed"):
            self.m_results.labels(model, status)
        fallback = self.policy(model).fallback
        if fallback:
            self.m_fallback.labels(model, fallback)

    # the batch ---------------------------------------------------------------------------------

    async def process(self, batch: Batch) -> None:
        self._load_overrides()
        self._answered: list[tuple[str, str]] = []
        await self._process(batch)
        # Counted once the whole batch is answered (a batch rewound for backpressure counts
        # later), and labelled then: an expired request answered before its model's first
        # look-up in the batch (another partition's records come first) still gets its model.
        for model, status in self._answered:
            self.m_results.labels(model if model in self._known else "other", status).inc()

    async def _process(self, batch: Batch) -> None:
        now = datetime.now(UTC)
        groups: dict[tuple, list[_Item]] = {}
        infos: dict[tuple, ModelInfo] = {}
        for event in batch.events:
            req: InferenceRequested = event.payload
            if not _replyable(req.reply_to):
                self._answer(batch, event, "invalid", RESULTS_TOPIC,
                             error=f"reply_to {req.reply_to!r} is not a topic for inference results")
                continue
            deadline = req.deadline
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)  # a deadline without a zone is UTC
            if deadline is not None and deadline <= now:
                self._answer(batch, event, "expired",
                             error=f"deadline {req.deadline.isoformat()} passed before inference")
                continue
            try:
                info = await self.client.info(req.model, req.model_version)
                self._known.add(info.name)
                arrays = validate(req, info)
            except TritonRejected as exc:
                self._answer(batch, event, "invalid", error=str(exc))
                continue
            except ValueError as exc:
                self._answer(batch, event, "invalid", error=f"model {req.model!r}: {exc}")
                continue
            key = (req.model, req.model_version or "",
                   tuple(sorted((n, a.shape) for n, a in arrays.items())))
            infos[key] = info
            groups.setdefault(key, []).append(_Item(event, req, arrays))

        calls = []
        for key, items in groups.items():
            info = infos[key]
            size = max(1, min(self.policy(info.name).max_batch_size, info.batch_limit))
            items.sort(key=lambda i: -i.request.priority)  # stable: arrival order within a priority
            for i in range(0, len(items), size):
                calls.append(self._run(info, key[1] or None, items[i:i + size]))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # TritonUnavailable: the runtime rewinds and pauses (backpressure)

        for items in groups.values():
            for item in items:
                if item.error is not None:
                    self._answer(batch, item.event, item.error[0], error=item.error[1])
                else:
                    self._answer(batch, item.event, "ok", outputs=item.outputs,
                                 served_by=item.served_by, version=item.version)

    async def _run(self, info: ModelInfo, version: str | None, items: list[_Item]) -> None:
        """One micro-batch: retries, the breaker, the fallback; bisects a batch Triton refuses."""
        model = info.name
        state = self._state(info)
        attempt = 0
        while True:
            if not state.breaker.allow():
                self.m_breaker.labels(model).set(1)
                if await self._fallback(info, items):
                    return
                raise TritonUnavailable(f"circuit breaker open for model {model!r}",
                                        retry_after=state.breaker.retry_after())
            try:
                await self._call(info, version, items, state)
            except TritonUnavailable as exc:
                state.breaker.failure()
                self.m_breaker.labels(model).set(1 if state.breaker.state != "closed" else 0)
                attempt += 1
                if attempt > self.settings.inference_retries or state.breaker.state == "open":
                    if await self._fallback(info, items):
                        return
                    log.warning("triton unavailable", extra={"model": model, "error": str(exc)})
                    if state.breaker.state == "open":
                        exc.retry_after = state.breaker.retry_after()
                    raise
                self.m_retries.labels(model).inc()
                await asyncio.sleep(backoff_s(attempt, self.settings.inference_retry_backoff_s))
                continue
            except TritonRejected as exc:
                state.breaker.success()  # Triton answered: it is up
                if len(items) == 1:
                    status = "invalid" if any(c in str(exc) for c in (
                        "INVALID_ARGUMENT", "NOT_FOUND", "400", "404")) else "failed"
                    items[0].error = (status, f"model {model!r} refused the request: {exc}")
                    return
                mid = len(items) // 2
                await asyncio.gather(self._run(info, version, items[:mid]),
                                     self._run(info, version, items[mid:]))
                return
            state.breaker.success()
            self.m_breaker.labels(model).set(0)
            return

    async def _call(self, info: ModelInfo, version: str | None, items: list[_Item],
                    state: _ModelState, served_by: str | None = None) -> None:
        names = list(items[0].arrays)
        if info.max_batch_size > 0:
            inputs = {n: np.stack([i.arrays[n] for i in items]) for n in names}
        else:
            inputs = dict(items[0].arrays)
        async with state.gate:
            state.inflight += 1
            started = time.time()
            for item in items:
                self.m_wait.labels(info.name).observe(
                    max(started - item.event.envelope.time.timestamp(), 0.0))
            try:
                out = await self.client.infer(info, inputs, version=version)
            finally:
                state.inflight -= 1
            self.m_latency.labels(info.name).observe(time.time() - started)
            self.m_batch.labels(info.name).observe(len(items))
        for row, item in enumerate(items):
            wanted = item.request.outputs or list(out)
            unknown = [n for n in wanted if n not in out]
            if unknown:
                item.error = ("invalid", f"unknown outputs {unknown}; the model has {list(out)}")
                continue
            item.outputs = {n: (out[n][row] if info.max_batch_size > 0 else out[n])
                            for n in wanted}
            item.served_by = served_by or info.name
            item.version = info.version

    async def _fallback(self, info: ModelInfo, items: list[_Item]) -> bool:
        """Send the batch to the model's fallback, if one is configured and up. True if done."""
        name = self.policy(info.name).fallback
        if not name:
            return False
        try:
            fb = await self.client.info(name)
            for item in items:
                validate(item.request, fb)
        except (TritonUnavailable, TritonRejected, ValueError) as exc:
            log.warning("fallback model unusable", extra={"model": info.name, "fallback": name,
                                                          "error": str(exc)})
            return False
        state = self._state(fb)
        if not state.breaker.allow():
            return False
        try:
            await self._call(fb, None, items, state, served_by=fb.name)
        except (TritonUnavailable, TritonRejected) as exc:
            state.breaker.failure()
            log.warning("fallback model failed", extra={"model": info.name, "fallback": name,
                                                        "error": str(exc)})
            return False
        state.breaker.success()
        self.m_fallback.labels(info.name, fb.name).inc()
        return True

    def _answer(self, batch: Batch, event: Event, status: str, topic: str | None = None, *,
                error: str | None = None, outputs: dict[str, np.ndarray] | None = None,
                served_by: str | None = None, version: str | None = None) -> None:
        req: InferenceRequested = event.payload
        tensors = []
        if outputs:
            for name, arr in outputs.items():
                dtype = _datatype(arr)
                tensors.append(Tensor(name=name, datatype=dtype, shape=list(arr.shape),
                                      data=to_json(dtype, arr)))
        result = InferenceCompleted(correlation_id=req.correlation_id, model=req.model,
                                    model_version=version or req.model_version, status=status,
                                    outputs=tensors, error=error, served_by=served_by)
        batch.emit(topic or req.reply_to, INFERENCE_COMPLETED, result, cause=event)
        self._answered.append((req.model, status))
        if status in ("invalid", "failed"):
            batch.reject(event, f"inference_{status}", error or status)


def _replyable(topic_name: str) -> bool:
    spec = TOPICS.get(topic_name)
    return spec is not None and spec.events.get(INFERENCE_COMPLETED) is InferenceCompleted


def validate(req: InferenceRequested, info: ModelInfo) -> dict[str, np.ndarray]:
    """This request's inputs as arrays, checked against the model's metadata (ValueError if not)."""
    given = {t.name: t for t in req.inputs}
    if len(given) != len(req.inputs):
        raise ValueError("an input is given twice")
    missing = sorted(set(info.inputs) - set(given))
    unknown = sorted(set(given) - set(info.inputs))
    if missing or unknown:
        raise ValueError(f"inputs missing {missing}, unknown {unknown}; "
                         f"the model takes {sorted(info.inputs)}")
    arrays = {}
    for name, spec in info.inputs.items():
        t = given[name]
        if t.datatype != spec.datatype:
            raise ValueError(f"input {name!r} is {t.datatype}; the model takes {spec.datatype}")
        shape = tuple(t.shape)
        if len(shape) != len(spec.shape) or any(
                want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)):
            raise ValueError(f"input {name!r} has shape {list(shape)}; the model takes "
                             f"{list(spec.shape)} (without the batch dimension)")
        if any(d < 0 for d in shape):
            raise ValueError(f"input {name!r} has a negative dimension")
        if req.outputs:
            unknown_out = sorted(set(req.outputs) - set(info.outputs))
            if unknown_out:
                raise ValueError(f"unknown outputs {unknown_out}; the model gives "
                                 f"{sorted(info.outputs)}")
        try:
            arrays[name] = to_numpy(t.datatype, t.data, shape)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"input {name!r}: {exc}") from None
    return arrays


_NP_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
                 np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                 np.dtype(np.int32): "INT32", np.dtype(np.int16): "INT16",
                 np.dtype(np.int8): "INT8", np.dtype(np.uint8): "UINT8",
                 np.dtype(np.bool_): "BOOL"}


def _datatype(arr: np.ndarray) -> str:
    if arr.dtype == np.object_ or arr.dtype.kind in "SU":
        return "BYTES"
    try:
        return _NP_TO_TRITON[arr.dtype]
    except KeyError:
        raise ValueError(f"no Triton datatype for {arr.dtype}") from None
