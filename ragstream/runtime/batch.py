"""What a worker sees: the ``Worker`` it subclasses, the ``Batch`` it fills, the ``Event`` it reads,
and the ``DeadLetter`` an event becomes when it cannot be processed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from ragstream.context import WorkerContext
from ragstream.errors import WiringError
from ragstream.sinks import Sink
from ragstream.transport.base import OutMessage, Record
from schemas.catalogue import topic
from schemas.envelope import Envelope, derived_event_id
from schemas.payloads import Payload


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

    def __init__(self, events: list[Event], worker: str, sinks: Mapping[str, Sink] | None = None):
        self.events = events
        self.writes: dict[str, list[Any]] = defaultdict(list)
        self.emitted: list[tuple[str, Envelope]] = []
        self.causes: dict[str, Event] = {}  # emitted event id -> the event it results from
        self.rejected: list[Rejection] = []
        self._worker = worker
        self._sinks = sinks or {}
        self._emit_counts: dict[str, int] = defaultdict(int)

    def write(self, sink: str, item: Any) -> None:
        """Buffer ``item`` for ``sink``; the runtime flushes every sink after ``process``."""
        if sink not in self._sinks:
            # A typo here used to be caught as a processing error: the whole batch was retried,
            # bisected (~380 process calls for 500 events) and dead-lettered. It is a bug in the
            # worker, not in its input: crash with a message that names the fix.
            raise WiringError(f"worker {self._worker!r} wrote to sink {sink!r}, but setup() "
                              f"built only {sorted(self._sinks)}")
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
        self.causes[event_id] = cause
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


def check_sinks(worker: Worker) -> None:
    """After ``setup``: ``worker.sinks`` names ``Sink`` objects, or the worker is miswired."""
    sinks = getattr(worker, "sinks", None)
    if not isinstance(sinks, dict):
        raise WiringError(f"worker {worker.name!r}: setup() must set self.sinks to a dict of "
                          f"name -> Sink (it is {type(sinks).__name__})")
    wrong = {name: type(s).__name__ for name, s in sinks.items()
             if not isinstance(name, str) or not isinstance(s, Sink)}
    if wrong:
        raise WiringError(f"worker {worker.name!r}: these sinks are not Sink objects: {wrong}")


@dataclass(slots=True)
class DeadLetter:
    record: Record
    error_class: str
    reason: str
    message: str
    stage: str
    attempts: int  # process calls this event was in, all failed (1 at the decode stage)

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
