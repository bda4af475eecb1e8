"""The worker runtime: one path for every event, shared by every worker.

    consume a batch -> 1 decode -> 2 process (with isolation) -> 3 publish -> 4 commit -> 5 record

Offsets are committed only after the sinks are flushed and the results and dead letters are
acknowledged by the broker: at-least-once delivery. A batch's commit is sent without waiting,
and the next batch's commit waits for it: offsets go out in order, and the round trip runs
beside the next batch's work. Sinks are idempotent, and derived events get
deterministic ids, so a replayed batch changes nothing.

While a batch waits on its stores and the broker (steps 2-4), the loop reads ahead: it consumes
and decodes the next batch (step 1), which is handled once this one is done. Batches are still
handled one at a time, in order; what is read ahead is only decoded, and is dropped, or rewound
with the batch, wherever the batch itself would be replayed.

Where each concern lives: the worker-facing API (``Worker``, ``Batch``, ``Event``,
``DeadLetter``) in batch.py; retry and isolation in isolation.py; pause, seek, resume, commit
offsets and lag in partitions.py; metric bookkeeping in ragstream/metrics.py (``WorkerSeries``).
This module is the lifecycle (setup, the loop, rebalances, drain) and the path of one batch.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from ragstream import tracing
from ragstream.backoff import backoff_s
from ragstream.config import Settings
from ragstream.context import WorkerContext
from ragstream.errors import CommitLost, MessageTooLarge, unavailable_types
from ragstream.logs import worker_var
from ragstream.metrics import HealthServer, RuntimeMetrics, WorkerSeries
from ragstream.runtime import failpoints
from ragstream.runtime.batch import Batch, DeadLetter, Event, Worker, check_sinks
from ragstream.runtime.isolation import Isolation
from ragstream.runtime.partitions import Partitions
from ragstream.transport.base import Consumer, OutMessage, Producer, Record, TopicPartition
from schemas import cloudevents
from schemas.catalogue import DecodeError, decode, topic

log = logging.getLogger(__name__)

ConsumerFactory = Callable[..., Consumer]
COMMIT_LOST_MESSAGE = "commit failed after a rebalance"  # the log line of an evicted worker
ASSIGNED_MESSAGE = "partitions assigned"  # set up (models loaded) and consuming


@dataclass(slots=True)
class _Fetched:
    """Records off the broker, decoded: their events, and a dead letter for each that could not
    be read."""
    records: list[Record] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    decode_seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.records)


# How long a poll of the read-ahead waits for records, once it holds some, before it looks at
# the batch in flight again (to start the next batch promptly when this one is done). Holding
# none, it waits as the loop's own poll does: 2 ms polls took 4% of a core through a long batch.
_READ_AHEAD_POLL_MS = 2


@dataclass
class WorkerRuntime:
    worker: Worker
    settings: Settings
    consumer_factory: ConsumerFactory
    producer: Producer
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    group_id: str | None = None

    def __post_init__(self) -> None:
        s, w = self.settings, self.worker
        self._specs = {name: topic(name) for name in w.consumes}
        self._idle = asyncio.Event()
        self._idle.set()
        self._committing: asyncio.Task | None = None  # the last batch's commit, in flight
        self._revoking = False  # a rebalance waits for the batches in hand: read no further
        self._stopping = asyncio.Event()
        self._alive = False
        self._ready = False
        self._consecutive_backpressure = 0
        self._last_lag_update = 0.0
        # what a dead letter's value may hold: the producer's request cap (see KafkaProducer)
        # less room for the headers; a bigger record is cut, never allowed to crash the worker
        self._dead_letter_max = s.max_message_bytes - (64 << 10)
        self._batch_max = min(s.batch_max_records, w.max_batch_records or s.batch_max_records)
        self.series = WorkerSeries(self.metrics, w.name, tuple(w.consumes), tuple(w.emits))
        self.health = HealthServer(self.metrics, lambda: self._ready, lambda: self._alive,
                                   s.metrics_host, s.metrics_port)
        self.consumer = self.consumer_factory(
            topics=list(w.consumes),
            group_id=self.group_id or s.group_id(w.name),
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
        )
        self.partitions = Partitions(self.consumer)
        self.isolation = Isolation(
            w, s.max_attempts, self._backoff,
            on_retry=lambda events: self.series.retried(events[0].record.topic, len(events)))

    def _backoff(self, attempt: int) -> float:
        return backoff_s(attempt, self.settings.retry_backoff_s, self.settings.max_backoff_s)

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
        for spec in self._specs.values():  # each topic's validator, built now, not in batch one
            spec.typed  # noqa: B018
        # What setup built (models, clients, validators) lives as long as the worker: move it out
        # of the collector's view. Full collections rescanned it every few batches (a batch keeps
        # hundreds of envelopes alive), ~1.5 µs per event on bench/runtime_overhead.py.
        gc.collect()
        gc.freeze()
        await self.health.start()
        await self.producer.start()
        await self.consumer.start()
        self._alive = True
        log.info("worker started", extra={"consumes": list(self.worker.consumes),
                                          "metrics_port": self.health.port})
        ahead = _Fetched()  # read while the last batch was in flight; its offsets not committed
        try:
            while not self._stopping.is_set():
                self.partitions.resume_due()
                batch, ahead = ahead, _Fetched()
                if not batch:
                    self._decode_into(batch, await self.consumer.getmany(
                        self.settings.batch_timeout_ms, self._batch_max))
                if batch and self.worker.fill_window_ms > 0:
                    await self._fill(batch)
                if batch:
                    self._idle.clear()
                    try:
                        ahead = await self._handle_reading_ahead(batch)
                    finally:
                        if not ahead:  # else the rebalance waits for it to be handled too
                            self._idle.set()
                self._update_lag()
        finally:
            self._alive = self._ready = False
            self._idle.set()  # what was read ahead is not handled: the group's next reader reads it
            await self._committed_or_replayed("at stop")
            await self.consumer.stop()
            await self.producer.stop()
            await self.worker.teardown()
            await self.health.stop()
            log.info("worker stopped")

    async def _fill(self, batch: _Fetched) -> None:
        """Poll on until the worker's fill target or window is reached (micro-batching)."""
        target = min(self.worker.fill_records or self._batch_max, self._batch_max)
        until = time.monotonic() + self.worker.fill_window_ms / 1000
        while len(batch.records) < target and not self._stopping.is_set():
            left_ms = (until - time.monotonic()) * 1000
            if left_ms <= 0:
                break
            self._decode_into(batch, await self.consumer.getmany(
                max(int(left_ms), 1), target - len(batch.records)))

    async def _handle_reading_ahead(self, batch: _Fetched) -> _Fetched:
        """Handle ``batch``, and meanwhile consume and decode the next one; return it.

        Decoding is CPU work in this thread; the batch in flight mostly waits on a store or the
        broker. Done in turn they added up: on bench/store_writes.py the reindex worker spent a
        third of its time fetching and decoding, with the store idle. The read-ahead stops when
        the batch is done, at ``batch_max_records``, at a stop or when a rebalance starts.
        If the batch meets backpressure, what was read ahead is rewound with it: it came after
        the batch, and was consumed from partitions the store is down for as much as the
        batch's own.

        A worker that fills its batches (``fill_window_ms``) does not read ahead: its next batch
        is filled after this one, by its own rule. Read ahead, batch inference's closed-loop
        requests split into two alternating batches of 35-40 instead of one of 53, and its
        requests/s fell by a tenth (bench/batch_inference.py)."""
        handling = asyncio.create_task(self._handle(batch))
        ahead = _Fetched()
        try:
            while self.worker.fill_window_ms <= 0:
                # the batch in flight first, up to its next wait on a store or the broker (a
                # fetch of buffered records returns without yielding to it)
                await asyncio.sleep(0)
                if (handling.done() or len(ahead.records) >= self._batch_max
                        or self._stopping.is_set() or self._revoking):
                    break
                wait_ms = _READ_AHEAD_POLL_MS if ahead else self.settings.batch_timeout_ms
                self._decode_into(ahead, await self.consumer.getmany(
                    wait_ms, self._batch_max - len(ahead.records)))
        finally:
            unavailable = await handling
        if unavailable is not None:
            self._pause(batch.records + ahead.records, unavailable)
            return _Fetched()
        return ahead

    async def _setup(self) -> None:
        """Set the worker up and check its sinks. A store that is down at start is waited for
        with backoff, as it is mid-run: a worker restarted during an outage used to die in
        ``setup`` and be restarted again and again until the store came back (chaos suite)."""
        attempt = 0
        while True:
            try:
                await self.worker.setup(WorkerContext(self.settings, self.metrics))
                check_sinks(self.worker)  # a WiringError stops the worker here, before any input
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
        # The group waits for us here: let the batches in hand (the one in flight, and the one
        # read ahead) flush and commit first.
        self._revoking = True
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("batch still in flight when partitions were revoked; it will be replayed")
        finally:
            self._revoking = False
        await self._committed_or_replayed("before partitions were revoked")
        self.partitions.revoked(revoked)
        for tp in revoked:
            self.series.forget_partition(tp.topic, tp.partition)
        self.series.assigned(len(self.consumer.assignment() - revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions.assigned(assigned)
        self.series.assigned(len(assigned))
        self._ready = True
        log.info(ASSIGNED_MESSAGE, extra={"partitions": sorted(f"{t}[{p}]" for t, p in assigned)})

    # the path of a batch -----------------------------------------------------------------------

    async def _handle(self, batch: _Fetched) -> BaseException | None:
        """The path of one batch; returns the error of a store or the broker that was down (the
        caller pauses the batch's partitions), or None once the batch's commit is sent."""
        started = time.perf_counter() - batch.decode_seconds
        records, events, dead = batch.records, batch.events, batch.dead
        self.series.consumed(records)

        # 1. Decode: bytes to typed events, done as the batch was consumed (``_decode_into``).
        #    What could not be read is a dead letter already.
        failpoints.reached("decoded", records)
        trace = tracing.BatchTrace(self.worker.name, events) if tracing.ENABLED else None
        try:
            # 2. Process, isolating the events that keep failing (into ``dead``). The sinks are
            #    flushed inside, per successful (sub-)batch.
            done = await self.isolation.run(events, dead) if events else []
            failpoints.reached("flushed", records)
            # 3. Publish results and dead letters, and wait for the broker's acks.
            for b in done:
                dead.extend(DeadLetter(x.event.record, "Rejected", x.reason, x.message,
                                       "process", 1) for x in b.rejected)
            emitted = await self._publish(done, dead, trace)
            failpoints.reached("published", records)
        except unavailable_types() as exc:
            # Backpressure: a store or the broker is down. Replay this batch later; never drop.
            if trace is not None:
                trace.end(exc)
            return exc
        self._consecutive_backpressure = 0

        # 4. Commit: everything before this point is durable. The commit's round trip runs
        #    beside the next batch's work (6 ms a batch on Tansu, a sixth of a reindex batch);
        #    the one before it is awaited first, so commits go out in order.
        await self._committed()
        offsets = self.partitions.commit_offsets(records)
        seconds = time.perf_counter() - started
        self._committing = asyncio.create_task(
            self._commit(offsets, records, seconds, done, emitted, dead, trace))
        return None

    async def _committed(self) -> None:
        """Wait for the commit in flight, if any (its errors are raised here)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def _committed_or_replayed(self, when: str) -> None:
        try:
            await self._committed()
        except Exception as exc:  # noqa: BLE001  the batch replays from the last commit
            log.warning("last commit failed; its batch will be replayed", extra={
                "when": when, "error": repr(exc)[:500]})

    async def _commit(self, offsets: dict[TopicPartition, int], records: list[Record],
                      seconds: float, done: list[Batch], emitted: list[str],
                      dead: list[DeadLetter], trace) -> None:
        try:
            await self.consumer.commit(offsets)
        except CommitLost as exc:
            # The group moved on; the new owner replays from the last commit, idempotently.
            log.warning(COMMIT_LOST_MESSAGE, extra={"error": str(exc)})
        failpoints.reached("committed", records)
        if trace is not None:
            trace.end()
        # 5. Record, once committed: metrics and a log line per dead letter.
        self._record(seconds, done, emitted, dead)

    def _decode_into(self, batch: _Fetched, records: list[Record]) -> None:
        """Decode ``records`` into ``batch``: an event each, or a dead letter."""
        if not records:
            return
        started = time.perf_counter()
        specs, max_bytes = self._specs, self.settings.max_event_bytes
        append, dead = batch.events.append, batch.dead
        batch.records += records
        for record in records:
            try:
                append(Event(record, decode(specs[record.topic], record.value, max_bytes,
                                           record.headers)))
            except DecodeError as exc:
                dead.append(DeadLetter(record, "DecodeError", exc.reason, exc.message, "decode", 1))
            except Exception as exc:  # noqa: BLE001  hostile input must not stop the partition
                dead.append(DeadLetter(record, type(exc).__name__, "undecodable", str(exc)[:500],
                                       "decode", 1))
        batch.decode_seconds += time.perf_counter() - started

    async def _publish(self, done: list[Batch], dead: list[DeadLetter], trace) -> list[str]:
        """Send the results of ``done`` and the dead letters; return the topics of the results
        sent. A result too large to send dead-letters its cause instead, with the reason
        ``result_too_large``: sent anyway, it crashed the worker (the producer's
        MessageSizeTooLarge) on every replay, or every reader dead-lettered it as oversized."""
        results = self._too_large_dead_lettered(self._encode(done), dead,
                                                self.settings.max_event_bytes)
        messages = [m for m, _ in results]
        if trace is not None:
            messages = trace.publish(messages)
        letters = [d.to_message(self.worker.name, self._dead_letter_max) for d in dead]
        try:
            if messages or letters:
                await self.producer.send_all(messages + letters)
        except MessageTooLarge:
            # the broker's limit is below the event limit: find what it refuses, one by one
            return await self._send_one_by_one(list(zip(messages, (c for _, c in results))),
                                               letters, dead)
        return [m.topic for m in messages]

    def _encode(self, done: list[Batch]) -> list[tuple[OutMessage, Event]]:
        """Each result as a message, with the event it results from."""
        mode = self.settings.cloudevents_mode
        out = []
        for b in done:
            for t, env in b.emitted:
                if mode == "structured":  # the common case, without a call per message
                    message = OutMessage(t, env.subject.encode(), env.model_dump_json().encode(),
                                         env.binding_headers())
                else:
                    message = OutMessage(t, env.subject.encode(), *cloudevents.encode(env, mode))
                out.append((message, b.causes[env.id]))
        return out

    def _too_large_dead_lettered(self, results: list[tuple[OutMessage, Event]],
                                 dead: list[DeadLetter], limit: int,
                                 ) -> list[tuple[OutMessage, Event]]:
        """The results of the causes whose every result is within ``limit``; each other cause
        becomes a dead letter and none of its results is sent (all or none of an event's
        results, as a failed process would)."""
        over = {}  # by id(cause): two events of a batch may share an event id
        for m, cause in results:
            if len(m.value) > limit and id(cause) not in over:
                over[id(cause)] = (cause, m)
        for cause, m in over.values():
            dead.append(_result_too_large(cause, m, limit))
        return [(m, c) for m, c in results if id(c) not in over]

    async def _send_one_by_one(self, results: list[tuple[OutMessage, Event]],
                               letters: list[OutMessage], dead: list[DeadLetter]) -> list[str]:
        sent: list[str] = []
        refused: dict[int, DeadLetter] = {}
        for m, cause in results:
            if id(cause) in refused:
                continue
            try:
                await self.producer.send_all([m])
                sent.append(m.topic)
            except MessageTooLarge as exc:
                # results of this cause sent before stay sent: replays re-send them alike
                refused[id(cause)] = _result_too_large(cause, m, None, str(exc))
        dead += refused.values()
        letters += [d.to_message(self.worker.name, self._dead_letter_max)
                    for d in refused.values()]
        for letter in letters:
            try:
                await self.producer.send_all([letter])
            except MessageTooLarge:
                # the dead letter's head is enough to find the original by its headers
                await self.producer.send_all([_cut(letter, _DEAD_LETTER_HEAD)])
        log.warning("messages refused as too large by the broker", extra={
            "dead_lettered": len(refused), "broker_limit_below": self.settings.max_event_bytes})
        return sent

    def _pause(self, records: list[Record], cause: BaseException) -> None:
        self._consecutive_backpressure += 1
        delay = getattr(cause, "retry_after", None) or self._backoff(self._consecutive_backpressure)
        paused = self.partitions.pause_from(records, delay)
        self.series.backpressure()
        log.warning("store unavailable, partitions paused", extra={
            "error": repr(cause)[:500], "retry_in_s": round(delay, 2), "partitions": paused})

    def _record(self, seconds: float, done: list[Batch], emitted: list[str],
                dead: list[DeadLetter]) -> None:
        series = self.series
        series.batch_seconds(seconds)
        # "now" in each event-time zone: datetimes with the same tzinfo object subtract without
        # utcoffset() calls, and pydantic's TzInfo made ``.timestamp()`` ~1 µs per event
        nows: dict[tzinfo | None, datetime] = {}
        ages: dict[str, list[float]] = defaultdict(list)
        dead_records = {id(d.record) for d in dead}
        for b in done:
            for e in b.events:
                if not dead_records or id(e.record) not in dead_records:
                    t = e.envelope.time
                    now = nows.get(t.tzinfo) or nows.setdefault(t.tzinfo, datetime.now(t.tzinfo))
                    ages[e.record.topic].append((now - t).total_seconds())
        for t, topic_ages in ages.items():
            series.processed(t, topic_ages)
        series.emitted(emitted)
        for d in dead:
            series.dead_lettered(d.record.topic, d.reason)
            log.warning("dead-lettered event", extra={
                "reason": d.reason, "stage": d.stage, "error": d.message[:500],
                "topic": d.record.topic, "partition": d.record.partition,
                "offset": d.record.offset})

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 1.0:
            return
        self._last_lag_update = now
        for tp, behind in self.partitions.lags():
            self.series.lag(tp.topic, tp.partition, behind)


_DEAD_LETTER_HEAD = 1024  # what a dead letter keeps of its value when the broker refuses more


def _result_too_large(cause: Event, result: OutMessage, limit: int | None,
                      refusal: str = "") -> DeadLetter:
    where = (f"over the {limit}-byte event limit (RAGSTREAM_MAX_EVENT_BYTES)" if limit
             else f"refused by the broker ({refusal[:300]})")
    return DeadLetter(cause.record, "ResultTooLarge", "result_too_large",
                      f"its {result.topic} result of {len(result.value)} bytes is {where}",
                      "publish", 1)


def _cut(letter: OutMessage, size: int) -> OutMessage:
    headers = [h for h in letter.headers if h[0] not in ("x-truncated", "x-original-size")]
    original = dict(letter.headers).get("x-original-size", str(len(letter.value)).encode())
    return OutMessage(letter.topic, letter.key, letter.value[:size],
                      headers + [("x-truncated", b"true"), ("x-original-size", original)])
