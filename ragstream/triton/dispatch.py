"""Triton dispatch policy: how a micro-batch of inference requests reaches its model.

- Per-model settings (``ModelSettings``) come from ``RAGSTREAM_INFERENCE_MODELS`` (JSON) or the
  file ``RAGSTREAM_INFERENCE_MODELS_PATH``, re-read when it changes; ``"*"`` applies to every model.
- Transient errors (``TritonUnavailable``) retry with exponential backoff, up to
  ``inference_retries`` times; then ``TritonUnavailable`` goes up to the caller (backpressure).
- A circuit breaker per model stops calling a failing model for ``inference_breaker_reset_s``;
  while it is open, a batch goes to the model's ``fallback`` if one is configured and usable.
- A batch Triton refuses is split in halves until the request at fault stands alone; that one is
  answered ``invalid`` when Triton says the request is at fault, ``failed`` when the model failed.
- At most ``max_inflight`` calls per model are in flight, never more than the model's queue limit
  (``max_queue_size`` of its queue policy).

The retry loop is written by hand rather than with tenacity: every attempt first asks the breaker,
and the last failure goes to the fallback instead of being raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ragstream.backoff import backoff_s

from ragstream.config import Settings
from ragstream.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from ragstream.triton.client import (ModelInfo, TritonClient, TritonRejected, TritonUnavailable,
                                     to_numpy)
from schemas.payloads import InferenceRequested

log = logging.getLogger(__name__)


@dataclass
class CircuitBreaker:
    """Per model: closed -> open after ``failures`` consecutive transient errors -> after
    ``reset_s`` half-open (one probe) -> closed on success, open again on failure."""

    failures: int
    reset_s: float
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False
    _clock: Any = field(default=time.monotonic, repr=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_after(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(self.reset_s - (self._clock() - self.opened_at), 0.05)

    def success(self) -> None:
        self.consecutive, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.consecutive += 1
        if self.probing or self.consecutive >= self.failures:
            self.opened_at = self._clock()
        self.probing = False


@dataclass(frozen=True)
class ModelPolicy:
    max_batch_size: int
    max_delay_ms: float
    max_inflight: int
    fallback: str | None = None


class ModelSettings:
    """The per-model overrides of the inference settings, re-read when their file changes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._overrides: dict[str, dict] = {}
        self._mtime: float | None = None
        self.reload(force=True)

    def reload(self, force: bool = False) -> bool:
        """Read the overrides again if their file changed (or ``force``). True if they did."""
        s = self.settings
        path: Path | None = s.inference_models_path
        if path is not None:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                mtime = None
            if not force and mtime == self._mtime:
                return False
            self._mtime = mtime
            raw = path.read_text() if mtime is not None else "{}"
        elif force:
            raw = s.inference_models
        else:
            return False
        try:
            overrides = json.loads(raw or "{}")
            if not isinstance(overrides, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            log.error("ignoring bad per-model inference settings", extra={"error": str(exc)})
            return False
        self._overrides = overrides
        return True

    def policy(self, model: str) -> ModelPolicy:
        s = self.settings
        o = {**self._overrides.get("*", {}), **self._overrides.get(model, {})}
        return ModelPolicy(max_batch_size=int(o.get("max_batch_size", s.inference_max_batch_size)),
                           max_delay_ms=float(o.get("max_delay_ms", s.inference_max_delay_ms)),
                           max_inflight=int(o.get("max_inflight", s.inference_max_inflight)),
                           fallback=o.get("fallback"))

    def _all(self) -> list[ModelPolicy]:
        return [self.policy(m) for m in self._overrides if m != "*"] + [self.policy("")]

    @property
    def fill_window_ms(self) -> float:
        """How long a consumed batch may fill: the smallest of the models' ``max_delay_ms``."""
        return min(p.max_delay_ms for p in self._all())

    @property
    def fill_records(self) -> int:
        return max(p.max_batch_size for p in self._all())


@dataclass
class Item:
    """One request's place in a micro-batch; the dispatcher fills in its answer."""

    request: InferenceRequested
    arrays: dict[str, np.ndarray]
    sent_at: float  # when the request was made (unix time): the queue-wait metric starts here
    origin: Any = None  # the caller's handle on the request (the worker's event), for its answer
    outputs: dict[str, np.ndarray] | None = None
    error: tuple[str, str] | None = None  # (status, message)
    served_by: str | None = None
    version: str | None = None


@dataclass
class _ModelState:
    breaker: CircuitBreaker
    gate: asyncio.Semaphore
    inflight: int = 0


class Dispatcher:
    """Sends micro-batches to Triton under the per-model policy; records what it did."""

    def __init__(self, client: TritonClient, settings: Settings, registry: CollectorRegistry):
        self.client = client
        self.settings = settings
        self.models = ModelSettings(settings)
        self._state: dict[str, _ModelState] = {}
        self.m_batch = Histogram("ragstream_inference_batch_size", "Requests per Triton call",
                                 ("model",), buckets=BATCH_BUCKETS, registry=registry)
        self.m_wait = Histogram("ragstream_inference_queue_wait_seconds",
                                "Request event time to its Triton call", ("model",),
                                buckets=LATENCY_BUCKETS, registry=registry)
        self.m_latency = Histogram("ragstream_inference_triton_seconds",
                                   "Triton call latency, per batch", ("model",),
                                   buckets=LATENCY_BUCKETS, registry=registry)
        self.m_retries = Counter("ragstream_inference_retries",
                                 "Triton calls retried after a transient error", ("model",),
                                 registry=registry)
        self.m_fallback = Counter("ragstream_inference_fallbacks",
                                  "Batches sent to the fallback model", ("model", "fallback"),
                                  registry=registry)
        self.m_breaker = Gauge("ragstream_inference_breaker_open",
                               "1 while the model's circuit breaker is open", ("model",),
                               registry=registry)

    def reload(self) -> None:
        """Pick up changed per-model settings; new inflight limits apply from now on."""
        if self.models.reload():
            for model, state in list(self._state.items()):
                if state.inflight == 0:
                    self._state.pop(model)

    def micro_batches(self, info: ModelInfo, items: list[Item]) -> list[list[Item]]:
        """``items`` (one model, one input shape) cut into calls no larger than the model's own
        ``max_batch_size`` nor Triton's; higher priority first, arrival order within one."""
        size = max(1, min(self.models.policy(info.name).max_batch_size, info.batch_limit))
        items = sorted(items, key=lambda i: -i.request.priority)  # stable
        return [items[i:i + size] for i in range(0, len(items), size)]

    async def run(self, info: ModelInfo, version: str | None, items: list[Item]) -> None:
        """One micro-batch: retries, the breaker, the fallback; bisects a batch Triton refuses.
        Raises TritonUnavailable when the model (and its fallback) cannot be reached."""
        model = info.name
        state = self._model(info)
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
                    items[0].error = ("invalid" if exc.invalid else "failed",
                                      f"model {model!r} refused the request: {exc}")
                    return
                mid = len(items) // 2
                await asyncio.gather(self.run(info, version, items[:mid]),
                                     self.run(info, version, items[mid:]))
                return
            state.breaker.success()
            self.m_breaker.labels(model).set(0)
            return

    def _model(self, info: ModelInfo) -> _ModelState:
        state = self._state.get(info.name)
        if state is None:
            inflight = self.models.policy(info.name).max_inflight
            if info.max_queue_size:  # never queue more at Triton than its queue policy allows
                inflight = min(inflight, info.max_queue_size)
            state = self._state[info.name] = _ModelState(
                CircuitBreaker(self.settings.inference_breaker_failures,
                               self.settings.inference_breaker_reset_s),
                asyncio.Semaphore(inflight))
            # the model's series start at 0 once it is called, instead of appearing at the first
            # retry, fallback or open breaker: rate() and the dashboard's panels see 0, not no data
            self.m_retries.labels(info.name)
            self.m_breaker.labels(info.name)  # a new series is 0; an existing one keeps its value
            if fallback := self.models.policy(info.name).fallback:
                self.m_fallback.labels(info.name, fallback)
        return state

    async def _call(self, info: ModelInfo, version: str | None, items: list[Item],
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
                self.m_wait.labels(info.name).observe(max(started - item.sent_at, 0.0))
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

    async def _fallback(self, info: ModelInfo, items: list[Item]) -> bool:
        """Send the batch to the model's fallback, if one is configured and up. True if done."""
        name = self.models.policy(info.name).fallback
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
        state = self._model(fb)
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
