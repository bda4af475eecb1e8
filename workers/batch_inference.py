"""Batch inference: inference.requests.v1 in, one result per request out (to its ``reply_to``).

    requests -> (expired? answer "expired", never sent) -> validate against the model's metadata
             -> group per model+version+input shapes -> micro-batches -> Triton -> one result each

This module is the event handling only. How a micro-batch reaches Triton (per-model settings
re-read at run time, retries, the circuit breaker, the fallback model, bisecting a refused batch,
the inflight limit) is ``ragstream.triton.dispatch``; see docs/inference.md.

Micro-batching: the runtime lets a consumed batch fill for ``max_delay_ms`` (the smallest of the
configured models') or until ``max_batch_size`` requests are in hand.

Answers:
- ``ok`` with the outputs the request asked for (all of the model's if it named none);
- ``expired``: its deadline passed before inference; it never reached Triton;
- ``invalid`` (also dead-lettered): a malformed request (unknown model or version, missing or
  unknown input, wrong dtype, shape or number of values, a reply_to that is no results topic),
  or one Triton refused as malformed; its batch-mates are answered as usual;
- ``failed`` (also dead-lettered): the model failed on this request alone.
When Triton (and the fallback) cannot be reached, ``TritonUnavailable`` goes up: the runtime
rewinds the whole batch and pauses (backpressure). Nothing was published for it, so nothing is
lost and nothing is duplicated.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
from prometheus_client import Counter

from ragstream.runtime import Batch, Event, Worker, WorkerContext
from ragstream.triton.client import ModelInfo, TritonClient, TritonRejected, to_json
from ragstream.triton.dispatch import Dispatcher, Item, validate
from schemas.catalogue import INFERENCE_COMPLETED, TOPICS
from schemas.payloads import InferenceCompleted, InferenceRequested, Tensor

RESULTS_TOPIC = "inference.results.v1"
STATUSES = ("ok", "expired", "invalid", "failed")


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
        self.sinks = {}
        if self.client is None:
            self.client = TritonClient(ctx.settings)
        self.dispatcher = Dispatcher(self.client, ctx.settings, ctx.metrics.registry)
        self._follow_model_settings()
        self.m_results = Counter("ragstream_inference_results", "Results, by status",
                                 ("model", "status"), registry=ctx.metrics.registry)

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _follow_model_settings(self) -> None:
        self.dispatcher.reload()
        self.fill_window_ms = self.dispatcher.models.fill_window_ms
        self.fill_records = self.dispatcher.models.fill_records

    async def process(self, batch: Batch) -> None:
        self._follow_model_settings()
        self._answered: list[tuple[str, str]] = []
        await self._process(batch)
        # Counted once the whole batch is answered (a batch rewound for backpressure counts
        # later), and labelled then: an expired request answered before its model's first
        # look-up in the batch (another partition's records come first) still gets its model.
        for model, status in self._answered:
            self.m_results.labels(model if model in self._known else "other", status).inc()

    async def _process(self, batch: Batch) -> None:
        groups, infos = await self._group(batch)
        calls = [self.dispatcher.run(infos[key], key[1] or None, chunk)
                 for key, items in groups.items()
                 for chunk in self.dispatcher.micro_batches(infos[key], items)]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome  # TritonUnavailable: the runtime rewinds and pauses (backpressure)
        for items in groups.values():
            for item in items:
                if item.error is not None:
                    self._answer(batch, item.origin, item.error[0], error=item.error[1])
                else:
                    self._answer(batch, item.origin, "ok", outputs=item.outputs,
                                 served_by=item.served_by, version=item.version)

    async def _group(self, batch: Batch) -> tuple[dict[tuple, list[Item]], dict[tuple, ModelInfo]]:
        """The batch's requests that can go to Triton, per model, version and input shapes
        (those are what one Triton call can stack); the others are answered here."""
        now = datetime.now(UTC)
        groups: dict[tuple, list[Item]] = {}
        infos: dict[tuple, ModelInfo] = {}
        for event in batch.events:
            req: InferenceRequested = event.payload
            if not _replyable(req.reply_to):
                self._answer(batch, event, "invalid", RESULTS_TOPIC, error=f"reply_to "
                             f"{req.reply_to!r} is not a topic for inference results")
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
                self._learn(info.name)
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
            groups.setdefault(key, []).append(
                Item(req, arrays, sent_at=event.envelope.time.timestamp(), origin=event))
        return groups, infos

    def _learn(self, model: str) -> None:
        """A model Triton knows: its result series exist from now on, at 0, so rate() and the
        dashboard's panels see 0 instead of no data."""
        if model not in self._known:
            self._known.add(model)
            for status in STATUSES:
                self.m_results.labels(model, status)

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
