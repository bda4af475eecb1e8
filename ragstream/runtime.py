"""The worker runtime: one path for every event, shared by every worker.

    consume a batch -> decode and validate -> process -> flush sinks -> publish results -> commit

Offsets are committed only after the sinks are flushed and the results and dead letters are
acknowledged by the broker: at-least-once delivery. Sinks are idempotent, and derived events get
deterministic ids, so a replayed batch changes nothing.

Failures:
- a store that is down or slow (``SinkUnavailable``, connection errors) is backpressure: the batch's
  partitions are rewound to the batch start and paused with exponential backoff. Never dropped.
- any other error is retried ``max_attempts`` times; then the batch is split in halves until the
  failing event stands alone and goes to the dead-letter topic. Its batch-mates carry on.
- ``PermanentError`` skips the retries; ``batch.reject`` dead-letters one event by name.
- undecodable input goes to the dead-letter topic at the decode stage, with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from ragstream.context import WorkerContext
from ragstream.errors import CommitLost, PermanentError, SinkUnavailable, unavailable_types
from ragstream.sinks import Sink
from ragstream import tracing
from ragstream.config import Settings
from ragstream.logs import event_id_var, trace_id_var, worker_var
from ragstream.metrics import HealthServer, RuntimeMetrics
from ragstream.transport.base import Consumer, OutMessage, Producer, Record, TopicPartition
from schemas.catalogue import DecodeError, TopicSpec, decode, topic
from schemas.envelope import Envelope, derived_event_id
from schemas.payloads import Payload

log = logging.getLogger(__name__)




@dataclass(slots=True)
class Event:
    """A decoded, validated event and the record it came from."""

    record: Record
    envelope: Envelope  # typed: ``envelope.data`` is the payload model

    @property
    def payload(self) -> Payload:
        return self.envelope.data

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def key(self) -> str:
        return self.envelope.subject

    @property
    def type(self) -> str:
        return self.envelope.type


@dataclass(slots=True)
class Rejection:
    event: Event
    reason: str
    message: str


class Batch:
    """What ``Worker.process`` sees and fills: the events, sink writes, results and rejections."""

    def __init__(self, events: list[Event], worker: str):
        self.events = events
        self.writes: dict[str, list[Any]] = defaultdict(list)
        self.emitted: list[tuple[str, Envelope]] = []
        self.rejected: list[Rejection] = []
        self._worker = worker
        self._emit_counts: dict[str, int] = defaultdict(int)

    def write(self, sink: str, item: Any) -> None:
        """Buffer ``item`` for ``sink``; the runtime flushes every sink after ``process``."""
        self.writes[sink].append(item)

    def emit(self, topic_name: str, event_type: str, payload: Payload, *, cause: Event,
             subject: str | None = None) -> Envelope:
        """Queue a result event. Its id derives from the cause, so a replay emits the same id."""
        spec = topic(topic_name)
        if spec.events.get(event_type) is not type(payload):
            raise TypeError(f"{event_type} with {type(payload).__name__} is not on {topic_name}")
        n = self._emit_counts[cause.id]
        self._emit_counts[cause.id] += 1
        event_id = derived_event_id(cause.id, topic_name, event_type, n)
        envelope = Envelope(
            id=event_id,
            type=event_type,
            source=f"ragstream/{self._worker}",
            subject=subject or cause.key,
            schemaversion=spec.version,
            traceparent=_child_traceparent(cause.envelope.traceparent, event_id),
            data=payload.model_dump(mode="json"),
        )
        self.emitted.append((topic_name, envelope))
        return envelope

    def reject(self, event: Event, reason: str, message: str) -> None:
        """Send one event to its dead-letter topic; the rest of the batch goes on."""
        self.rejected.append(Rejection(event, reason, message))


def _child_traceparent(parent: str | None, event_id: str) -> str | None:
    if parent is None:
        return None
    _, trace_id, _, flags = parent.split("-")
    return f"00-{trace_id}-{event_id.replace('-', '')[:16]}-{flags}"


class Worker(ABC):
    """A worker states what it consumes, writes and emits; the runtime does the rest."""

    name: ClassVar[str]
    consumes: ClassVar[tuple[str, ...]]
    emits: ClassVar[tuple[str, ...]] = ()
    # A slow worker (one that embeds, say) takes smaller batches, so one batch cannot outlast
    # the group's patience (max.poll.interval) and get the worker evicted mid-batch.
    max_batch_records: ClassVar[int | None] = None
    # A micro-batching worker (batch inference) lets a batch fill: after the first records arrive,
    # the runtime keeps polling for up to ``fill_window_ms`` or until ``fill_records`` are in hand.
    fill_window_ms: float = 0
    fill_records: int | None = None

    sinks: dict[str, Sink]

    async def setup(self, ctx: WorkerContext) -> None:
        """Open connections and build ``self.sinks``. Called once before consuming."""
        self.sinks = {}

    @abstractmethod
    async def process(self, batch: Batch) -> None: ...

    async def teardown(self) -> None:
        """Close what ``setup`` opened."""


async def for_each_key(events: Iterable[Event], fn: Callable[[Event], Awaitable[None]],
                       limit: int) -> None:
    """Run ``fn`` on every event: in order within a key, concurrently across keys, ``limit`` at once."""
    by_key: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_key[event.key].append(event)
    gate = asyncio.Semaphore(limit)

    async def run_key(group: list[Event]) -> None:
        async with gate:
            for event in group:
                await fn(event)

    await asyncio.gather(*(run_key(group) for group in by_key.values()))


@dataclass(slots=True)
class DeadLetter:
    record: Record
    error_class: str
    reason: str
    message: str
    stage: str
    attempts: int

    def to_message(self, worker: str, max_bytes: int | None = None) -> OutMessage:
        r = self.record
        spec = topic(r.topic)
        value, cut = r.value, []
        if max_bytes is not None and len(value) > max_bytes:
            # A record bigger than the producer may send cannot go to the DLQ whole: the send
            # raised, the worker died, and each restart replayed it and died again (found by the
            # chaos suite with a 10 MB event). Keep its head, say so, and point at the original
            # (topic, partition, offset) in the headers below.
            value = value[:max_bytes]
            cut = [("x-truncated", b"true"), ("x-original-size", str(len(r.value)).encode())]
        headers = [h for h in r.headers if not h[0].startswith("x-error-")] + cut + [
            ("x-error-class", self.error_class.encode()),
            ("x-error-reason", self.reason.encode()),
            ("x-error-message", self.message[:2000].encode("utf-8", "replace")),
            ("x-stage", self.stage.encode()),
            ("x-attempts", str(self.attempts).encode()),
            ("x-original-topic", r.topic.encode()),
            ("x-original-partition", str(r.partition).encode()),
            ("x-original-offset", str(r.offset).encode()),
            ("x-worker", worker.encode()),
            ("x-failed-at", datetime.now(UTC).isoformat().encode()),
        ]
        return OutMessage(spec.dlq, r.key, value, headers)


class _Backpressure(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _PartitionState:
    next_offset: int | None = None
    paused_until: float | None = None


ConsumerFactory = Callable[..., Consumer]


@dataclass
class WorkerRuntime:
    worker: Worker
    settings: Settings
    consumer_factory: ConsumerFactory
    producer: Producer
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    group_id: str | None = None

    def __post_init__(self) -> None:
        self._specs: dict[str, TopicSpec] = {name: topic(name) for name in self.worker.consumes}
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()
        self._alive = False
        self._ready = False
        self._consecutive_backpressure = 0
        self._last_lag_update = 0.0
        # what a dead letter's value may hold: the producer's request cap (see KafkaProducer)
        # less room for the headers; a bigger record is cut, never allowed to crash the worker
        self._dead_letter_max = max(self.settings.max_event_bytes * 2, 1 << 20) - (64 << 10)
        self._batch_max = min(self.settings.batch_max_records,
                              self.worker.max_batch_records or self.settings.batch_max_records)
        self.metrics.preset(self.worker.name, tuple(self.worker.consumes), tuple(self.worker.emits))
        self.health = HealthServer(self.metrics, lambda: self._ready, lambda: self._alive,
                                   self.settings.metrics_host, self.settings.metrics_port)
        self.consumer = self.consumer_factory(
            topics=list(self.worker.consumes),
            group_id=self.group_id or self.settings.group_id(self.worker.name),
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
        )

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Consuming, with partitions assigned (what ``/readyz`` answers)."""
        return self._ready

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batch in flight, commit, leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        worker_var.set(self.worker.name)
        await self._setup()
        await self.health.start()
        await self.producer.start()
        await self.consumer.start()
        self._alive = True
        log.info("worker started", extra={"consumes": list(self.worker.consumes),
                                          "metrics_port": self.health.port})
        try:
            while not self._stopping.is_set():
                self._resume_due_partitions()
                records = await self.consumer.getmany(self.settings.batch_timeout_ms,
                                                      self._batch_max)
                if records and self.worker.fill_window_ms > 0:
                    records = await self._fill(records)
                if records:
                    self._idle.clear()
                    try:
                        await self._handle(records)
                    finally:
                        self._idle.set()
                self._update_lag()
        finally:
            self._alive = self._ready = False
            await self.consumer.stop()
            await self.producer.stop()
            await self.worker.teardown()
            await self.health.stop()
            log.info("worker stopped")

    async def _fill(self, records: list[Record]) -> list[Record]:
        """Poll on until the worker's fill target or window is reached (micro-batching)."""
        target = min(self.worker.fill_records or self._batch_max, self._batch_max)
        until = time.monotonic() + self.worker.fill_window_ms / 1000
        while len(records) < target and not self._stopping.is_set():
            left_ms = (until - time.monotonic()) * 1000
            if left_ms <= 0:
                break
            records += await self.consumer.getmany(max(int(left_ms), 1), target - len(records))
        return records

    async def _setup(self) -> None:
        """Set the worker up. A store that is down at start is waited for with backoff, as it
        is mid-run: a worker restarted during an outage used to die in ``setup`` and be
        restarted again and again until the store came back (found by the chaos suite)."""
        attempt = 0
        while True:
            try:
                await self.worker.setup(WorkerContext(self.settings, self.metrics))
                return
            except unavailable_types() as exc:
                attempt += 1
                if self._stopping.is_set():
                    raise
                delay = self._backoff(attempt)
                log.warning("store unavailable at start, retrying", extra={
                    "error": repr(exc)[:500], "retry_in_s": round(delay, 2)})
                try:  # close what the failed setup opened
                    await self.worker.teardown()
                except Exception:  # noqa: BLE001  it may not have opened anything
                    pass
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # The group waits for us here: let the batch in flight flush and commit first.
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("batch still in flight when partitions were revoked; it will be replayed")
        for tp in revoked:
            self._partitions.pop(tp, None)
            try:
                self.metrics.lag.remove(self.worker.name, tp.topic, str(tp.partition))
            except KeyError:  # no lag was reported for it yet
                pass
        self.metrics.assigned.labels(self.worker.name).set(len(self.consumer.assignment() - revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._partitions.setdefault(tp, _PartitionState())
        self.metrics.assigned.labels(self.worker.name).set(len(assigned))
        self._ready = True
        log.info("partitions assigned", extra={"partitions": sorted(f"{t}[{p}]" for t, p in assigned)})

    # the path of a batch -----------------------------------------------------------------------

    async def _handle(self, records: list[Record]) -> None:
        started = time.perf_counter()
        name = self.worker.name
        per_topic: dict[str, int] = defaultdict(int)
        for r in records:
            per_topic[r.topic] += 1
        for t, n in per_topic.items():
            self.metrics.consumed.labels(name, t).inc(n)
        self.metrics.batch_size.labels(name).observe(len(records))

        dead: list[DeadLetter] = []
        events = [e for r in records if (e := self._decode(r, dead)) is not None]
        trace = tracing.BatchTrace(name, events) if tracing.ENABLED else None
        try:
            batches = await self._process_isolating(events, dead) if events else []
            emitted = [(t, env) for b in batches for t, env in b.emitted]
            messages = [OutMessage(t, env.subject.encode(), env.model_dump_json().encode(),
                                   env.binding_headers()) for t, env in emitted]
            if trace is not None:
                messages = trace.publish(messages)
            for b in batches:
                dead.extend(DeadLetter(x.event.record, "Rejected", x.reason, x.message, "process", 1)
                            for x in b.rejected)
            messages += [d.to_message(name, self._dead_letter_max) for d in dead]
            try:
                await self.producer.send_all(messages)
            except unavailable_types() as exc:
                raise _Backpressure(exc) from exc
        except _Backpressure as bp:
            if trace is not None:
                trace.end(bp.cause)
            self._rewind_and_pause(records, bp.cause)
            return
        self._consecutive_backpressure = 0
        await self._commit(records)
        if trace is not None:
            trace.end()

        self.metrics.process_seconds.labels(name).observe(time.perf_counter() - started)
        now = time.time()
        freshness = {t: self.metrics.freshness.labels(name, t) for t in per_topic}
        processed: dict[str, int] = defaultdict(int)
        for b in batches:
            rejected = {id(x.event) for x in b.rejected}
            for e in b.events:
                if id(e) not in rejected:
                    processed[e.record.topic] += 1
                    freshness[e.record.topic].observe(max(now - e.envelope.time.timestamp(), 0.0))
        for t, n in processed.items():
            self.metrics.processed.labels(name, t).inc(n)
        for t, n in _count(t for t, _ in emitted).items():
            self.metrics.emitted.labels(name, t).inc(n)
        for d in dead:
            self.metrics.dead_lettered.labels(name, d.record.topic, d.reason).inc()
            log.warning("dead-lettered event", extra={
                "reason": d.reason, "stage": d.stage, "error": d.message[:500],
                "topic": d.record.topic, "partition": d.record.partition,
                "offset": d.record.offset})

    def _decode(self, record: Record, dead: list[DeadLetter]) -> Event | None:
        spec = self._specs[record.topic]
        try:
            return Event(record, decode(spec, record.value, self.settings.max_event_bytes,
                                         record.headers))
        except DecodeError as exc:
            dead.append(DeadLetter(record, "DecodeError", exc.reason, exc.message, "decode", 1))
        except Exception as exc:  # a decoder crash on hostile input must not stop the partition
            dead.append(DeadLetter(record, type(exc).__name__, "undecodable", str(exc)[:500],
                                   "decode", 1))
        return None

    async def _process_isolating(self, events: list[Event], dead: list[DeadLetter]) -> list[Batch]:
        """Process and flush ``events``; isolate events that keep failing into ``dead``."""
        attempt = 0
        while True:
            attempt += 1
            batch = Batch(events, self.worker.name)
            event_id_var.set(events[0].id)
            trace_id_var.set(events[0].envelope.trace_id)
            try:
                await self.worker.process(batch)
                for sink_name, items in batch.writes.items():
                    await self.worker.sinks[sink_name].flush(items)
                return [batch]
            except unavailable_types() as exc:
                raise _Backpressure(exc) from exc
            except Exception as exc:
                permanent = isinstance(exc, PermanentError)
                if not permanent and attempt < self.settings.max_attempts:
                    self.metrics.retried.labels(self.worker.name, events[0].record.topic).inc(
                        len(events))
                    log.warning("batch failed, retrying", extra={
                        "attempt": attempt, "events": len(events), "error": repr(exc)[:500]})
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                if len(events) == 1:
                    reason = getattr(exc, "reason", "permanent" if permanent else "retries_exhausted")
                    dead.append(DeadLetter(events[0].record, type(exc).__name__, reason,
                                           str(exc) or repr(exc), "process", attempt))
                    return []
                mid = len(events) // 2
                return (await self._process_isolating(events[:mid], dead)
                        + await self._process_isolating(events[mid:], dead))

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.retry_backoff_s * 2 ** (attempt - 1), self.settings.max_backoff_s)

    def _rewind_and_pause(self, records: list[Record], cause: BaseException) -> None:
        """Backpressure: replay this batch later from its first offsets; keep polling meanwhile."""
        self._consecutive_backpressure += 1
        delay = getattr(cause, "retry_after", None) or self._backoff(self._consecutive_backpressure)
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault(r.tp, r.offset)
        assigned = self.consumer.assignment()
        paused = [tp for tp in first if tp in assigned]
        for tp in paused:
            self.consumer.seek(tp, first[tp])
            self._partitions.setdefault(tp, _PartitionState()).paused_until = time.monotonic() + delay
        self.consumer.pause(paused)
        self.metrics.backpressure.labels(self.worker.name).inc()
        log.warning("store unavailable, partitions paused", extra={
            "error": repr(cause)[:500], "retry_in_s": round(delay, 2), "partitions": len(paused)})

    def _resume_due_partitions(self) -> None:
        now = time.monotonic()
        due = [tp for tp, st in self._partitions.items()
               if st.paused_until is not None and st.paused_until <= now]
        if due:
            for tp in due:
                self._partitions[tp].paused_until = None
            self.consumer.resume([tp for tp in due if tp in self.consumer.assignment()])

    async def _commit(self, records: list[Record]) -> None:
        # a batch holds each partition's records in offset order: the last one per partition wins
        offsets = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}
        for tp, off in offsets.items():
            self._partitions.setdefault(tp, _PartitionState()).next_offset = off
        assigned = self.consumer.assignment()
        owned = {tp: off for tp, off in offsets.items() if tp in assigned}
        try:
            await self.consumer.commit(owned)
        except CommitLost as exc:
            # The group moved on; the new owner replays from the last commit, idempotently.
            log.warning("commit failed after a rebalance", extra={"error": str(exc)})

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 1.0:
            return
        self._last_lag_update = now
        for tp in self.consumer.assignment():
            state = self._partitions.get(tp)
            high = self.consumer.highwater(tp)
            if state is None or state.next_offset is None or high is None:
                continue
            self.metrics.lag.labels(self.worker.name, tp.topic, str(tp.partition)).set(
                max(high - state.next_offset, 0))


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item] += 1
    return out
