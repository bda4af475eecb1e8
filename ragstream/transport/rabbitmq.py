"""RabbitMQ through kombu: the same workers, with no change to their code.

Topology, under a namespace (``rabbitmq_namespace``, default ``ragstream``): a durable topic
exchange per topic family (``ragstream.documents`` carries ``documents.v1`` and
``documents.v1.dlq`` as routing keys); each consumer group reads a durable quorum queue per topic
(``<group>.<topic>``); dead letters wait in ``ragstream.documents.v1.dlq``. How it maps onto the runtime's Kafka-shaped view:

- a queue is one "partition" (0) of its topic; the channel's delivery tags are the offsets;
- commit acks the delivered tags below the committed offset, after the sinks flushed;
- seek rewinds in the consumer: the deliveries from that offset on stay unacked and are handed
  out again (a reject with requeue would count against the delivery limit); pause cancels the
  queue's consumer, so the broker stops delivering until resume (never a redelivery spin);
- prefetch matches the batch size; publishing waits for publisher confirms;
- a message delivered ``rabbitmq_delivery_limit`` times (one that kills its worker each time)
  goes to the DLX, the topic's ``.dlq`` routing key, with RabbitMQ's own ``x-death`` header.

kombu is synchronous and a connection is not thread-safe, so each connection lives on its own
I/O thread; the event loop talks to it through a command queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions

from ragstream.config import Settings
from ragstream.errors import TransportUnavailable
from ragstream.transport.base import (
    OutMessage, Reader, RebalanceCallback, Record, TopicPartition,
)
from schemas.catalogue import DLQ_SUFFIX

log = logging.getLogger(__name__)

KEY_HEADER = "ragstream-key"


def _exchange(settings: Settings, topic: str) -> kombu.Exchange:
    family = topic.split(".", 1)[0]
    return kombu.Exchange(f"{settings.rabbitmq_namespace}.{family}", type="topic", durable=True)


def dead_letter_queue(settings: Settings, topic: str) -> kombu.Queue:
    dlq = topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX
    return kombu.Queue(f"{settings.rabbitmq_namespace}.{dlq}", _exchange(settings, dlq),
                       routing_key=dlq, durable=True, queue_arguments={"x-queue-type": "quorum"})


def consumer_queue(settings: Settings, group_id: str, topic: str) -> kombu.Queue:
    exchange = _exchange(settings, topic)
    args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": exchange.name,
        "x-dead-letter-routing-key": topic + DLQ_SUFFIX,
        "x-delivery-limit": settings.rabbitmq_delivery_limit,
    }
    if settings.rabbitmq_single_active_consumer:
        args["x-single-active-consumer"] = True
    return kombu.Queue(f"{group_id}.{topic}", exchange, routing_key=topic, durable=True,
                       queue_arguments=args)


def _connection(settings: Settings) -> kombu.Connection:
    return kombu.Connection(settings.rabbitmq_url.get_secret_value(), heartbeat=30,
                            transport_options={"confirm_publish": True})


# what kombu and amqp raise when the broker is gone or refuses (ConnectionError is an OSError)
_BROKER_ERRORS = (OSError, amqp.exceptions.AMQPError, kombu.exceptions.KombuError)


def _amqp_headers(message: OutMessage) -> dict[str, str]:
    # latin-1 maps every byte to one character and back: header bytes survive unchanged
    headers = {k: v.decode("latin-1") for k, v in message.headers}
    if message.key is not None:
        headers[KEY_HEADER] = message.key.decode("latin-1")
    return headers


def _record(message: Any, topic: str) -> Record:
    raw = dict(message.headers or {})
    key = raw.pop(KEY_HEADER, None)
    headers = [(k, v if isinstance(v, bytes) else
                 v.encode("latin-1") if isinstance(v, str) else str(v).encode())
               for k, v in raw.items()]
    if "x-death" in raw and "x-error-reason" not in raw and topic.endswith(DLQ_SUFFIX):
        # dead-lettered by the broker itself (its delivery limit), not by a worker: say so in
        # the headers a worker's dead letter carries, so tail and dlq replay treat it alike
        headers += [("x-error-reason", b"delivery_limit"),
                    ("x-error-message", b"RabbitMQ's delivery limit for the queue was reached"),
                    ("x-original-topic", topic.removesuffix(DLQ_SUFFIX).encode())]
    return Record(topic, 0, message.delivery_tag, key.encode("latin-1") if key else None,
                  message.body, headers)


class _IOThread:
    """Owns one kombu connection; runs submitted callables on it, between event drains."""

    def __init__(self, name: str, connect: Callable[[], kombu.Connection]):
        self._connect = connect
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.connection: kombu.Connection | None = None
        self.error: BaseException | None = None  # why the thread died, for the event loop
        self._ready = concurrent.futures.Future()

    async def start(self) -> None:
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        self.check()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, future))
        return future

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self.call(fn))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self.connection = self._connect()
            self.connection.connect()
        except Exception as exc:  # refused, unreachable, bad credentials
            self._ready.set_exception(TransportUnavailable(f"RabbitMQ unreachable: {exc!r}"))
            return
        self._ready.set_result(None)
        try:
            while not self._stopping.is_set():
                self._run_commands()
                try:
                    self.connection.drain_events(timeout=0.02)
                except (socket.timeout, TimeoutError):
                    pass
            self._run_commands()
        except Exception as exc:  # connection lost, consumer cancelled by the broker, ...
            self.error = exc
            log.error("RabbitMQ I/O thread stopped", extra={"error": repr(exc)[:500]})
            self._fail_pending(exc)
        finally:
            with contextlib.suppress(Exception):
                self.connection.release()

    def _fail_pending(self, exc: BaseException) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            future.set_exception(ConnectionError(f"RabbitMQ connection lost: {exc!r}"))

    def check(self) -> None:
        """Raise in the caller if the I/O thread has died: better a restart than a silent hang."""
        if self.error is not None:
            raise ConnectionError(f"RabbitMQ connection lost: {self.error!r}") from self.error

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)


class RabbitConsumer:
    def __init__(self, settings: Settings, topics: Sequence[str], group_id: str,
                 on_revoked: RebalanceCallback, on_assigned: RebalanceCallback):
        self._settings = settings
        self._queues = {t: consumer_queue(settings, group_id, t) for t in topics}
        self._on_revoked, self._on_assigned = on_revoked, on_assigned
        self._io = _IOThread(f"rabbit-consumer-{group_id}", lambda: _connection(settings))
        # deliveries by tag: not yet handed to the runtime, and handed but not yet acked. A seek
        # moves handed ones back to be handed again, here: handing them back to the broker
        # (reject with requeue) counted as a failed delivery on quorum queues, so a store
        # outage of ~20 rewinds had the broker dead-letter the batch in flight.
        self._buffered: dict[TopicPartition, dict[int, Record]] = {
            tp: {} for tp in self.assignment()}
        self._inflight: dict[TopicPartition, dict[int, Record]] = {
            tp: {} for tp in self.assignment()}
        self._consumers: dict[str, kombu.Consumer] = {}
        self._ready_counts: dict[str, int] = {}
        self._last_handed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._arrived = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._io.start()
        await self._io.run(self._declare_and_consume)
        await self._on_assigned(self.assignment())

    def _declare_and_consume(self) -> None:
        channel = self._io.connection.default_channel
        channel.basic_qos(0, self._settings.batch_max_records, False)
        for topic in self._queues:
            dead_letter_queue(self._settings, topic).bind(channel).declare()
            self._consume(topic)

    def _consume(self, topic: str) -> None:
        def deliver(message: Any) -> None:  # on the I/O thread
            self._loop.call_soon_threadsafe(self._delivered, _record(message, topic))

        consumer = kombu.Consumer(self._io.connection.default_channel, [self._queues[topic]],
                                  on_message=deliver, no_ack=False, auto_declare=True)
        consumer.consume()
        self._consumers[topic] = consumer

    def _delivered(self, record: Record) -> None:
        self._buffered[record.tp][record.offset] = record
        self._arrived.set()

    async def stop(self) -> None:
        await self._on_revoked(self.assignment())
        self._io.stop()  # closing the channel returns every unacked delivery to its queue

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        self._io.check()
        deadline = self._loop.time() + timeout_ms / 1000
        while True:
            out = self._hand_out(max_records)
            if out or self._loop.time() >= deadline:
                return out
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - self._loop.time())
            except TimeoutError:
                return self._hand_out(max_records)

    def _hand_out(self, max_records: int) -> list[Record]:
        """Buffered deliveries of the partitions not paused, in delivery order per queue."""
        out: list[Record] = []
        for tp, buffered in self._buffered.items():
            if tp in self._paused or not buffered:
                continue
            for tag in sorted(buffered)[:max_records - len(out)]:
                record = buffered.pop(tag)
                self._inflight[tp][tag] = record
                self._last_handed[tp] = tag
                out.append(record)
            if len(out) >= max_records:
                break
        return out

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t, 0) for t in self._queues}

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        """Stop the queue's deliveries; what was delivered stays here, unacked, for resume."""
        for tp in tps:
            if tp in self._paused:
                continue
            self._paused.add(tp)
            self._io.call(lambda topic=tp.topic: self._consumers.pop(topic).cancel())

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            if tp in self._paused:
                self._paused.discard(tp)
                self._io.call(lambda topic=tp.topic: self._consume(topic))
                self._arrived.set()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Hand out again everything handed out from ``offset`` on (kept unacked, here)."""
        inflight = self._inflight[tp]
        for tag in [t for t in inflight if t >= offset]:
            self._buffered[tp][tag] = inflight.pop(tag)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        acked = []
        for tp, offset in offsets.items():
            inflight = self._inflight[tp]
            done = sorted(t for t in inflight if t < offset)
            for tag in done:
                del inflight[tag]
            acked += done

        def ack() -> None:
            channel = self._io.connection.default_channel
            for tag in acked:
                channel.basic_ack(tag)
        await self._io.run(ack)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The last tag handed out plus what waits in the queue (refreshed in the background)."""
        self._io.call(lambda: self._count_ready(tp.topic))
        ready = self._ready_counts.get(tp.topic)
        handed = self._last_handed.get(tp)
        return None if ready is None or handed is None else handed + 1 + ready

    def _count_ready(self, topic: str) -> None:
        channel = self._io.connection.default_channel
        _, ready, _ = channel.queue_declare(self._queues[topic].name, passive=True)
        self._ready_counts[topic] = ready


class RabbitProducer:
    """Publishes persistent messages and waits for the broker's confirm of each one."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._io = _IOThread("rabbit-producer", lambda: _connection(settings))
        self._declared: set[str] = set()

    async def start(self) -> None:
        await self._io.start()

    async def stop(self) -> None:
        self._io.stop()

    async def send_all(self, messages: Sequence[OutMessage]) -> None:
        if messages:
            try:
                await self._io.run(lambda: self._publish(messages))
            except _BROKER_ERRORS as exc:  # connection lost, or a publish the broker nacked
                raise TransportUnavailable(f"RabbitMQ publish: {exc!r}") from exc

    def _publish(self, messages: Sequence[OutMessage]) -> None:
        producer = kombu.Producer(self._io.connection.default_channel)
        for m in messages:
            exchange = _exchange(self._settings, m.topic)
            if exchange.name not in self._declared:
                exchange.declare(channel=producer.channel)
                self._declared.add(exchange.name)
            producer.publish(m.value, exchange=exchange, routing_key=m.topic,
                             headers=_amqp_headers(m), delivery_mode=2,
                             content_type="application/json", content_encoding="binary",
                             mandatory=False)


class RabbitReader(Reader):
    """What a Kafka reader does, mapped onto queues (docs/transports.md has the table):

    - with a group, the group's durable queue per topic, the one a worker of that group reads
      (it keeps what arrived since it was declared); ``commit`` acks, and acked is gone. A
      dead-letter topic's group reads the dead-letter queue itself, whatever the group's name;
    - without a group, from the end: an exclusive, auto-deleted queue bound to the topic, which
      sees what is published from now on;
    - without a group, from the beginning: only a dead-letter topic has a beginning (its queue);
      it is browsed: nothing is acked, and every letter returns to the queue when the reader
      stops. Any other topic raises: RabbitMQ kept nothing for a queue that did not exist.

    An offset counts this reader's deliveries from its queue (0, 1, ...), so ``position`` is
    how many it handed out, and ``end_offsets`` adds what waits in the queue.
    """

    replayable = False

    def __init__(self, settings: Settings, topics: Sequence[str], group: str | None,
                 from_beginning: bool):
        self._settings, self._group = settings, group
        self._browse = group is None and from_beginning
        self._queues = {t: self._queue(t) for t in topics}
        self._io = _IOThread(f"rabbit-reader-{group or 'groupless'}",
                             lambda: _connection(settings))
        self._buffer: asyncio.Queue[tuple[int, Record]] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._received = dict.fromkeys(topics, 0)  # counted on the I/O thread: the offsets
        self._ready_at_start = dict.fromkeys(topics, 0)
        self._handed = dict.fromkeys(topics, 0)
        self._unacked: list[int] = []  # delivery tags handed out, acked by commit
        self._loop: asyncio.AbstractEventLoop | None = None

    def _queue(self, topic: str) -> kombu.Queue:
        if self._group is not None:
            return (dead_letter_queue(self._settings, topic) if topic.endswith(DLQ_SUFFIX)
                    else consumer_queue(self._settings, self._group, topic))
        if self._browse:
            if not topic.endswith(DLQ_SUFFIX):
                raise ValueError(f"RabbitMQ keeps no history of {topic!r} for a reader without a "
                                 "group: read from the end, or with a group whose queue existed "
                                 "before the events were published")
            return dead_letter_queue(self._settings, topic)
        return kombu.Queue(f"{self._settings.rabbitmq_namespace}.reader.{uuid.uuid4().hex}.{topic}",
                           _exchange(self._settings, topic), routing_key=topic,
                           exclusive=True, auto_delete=True, durable=False)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._io.start()
        try:
            await self._io.run(self._consume)
        except _BROKER_ERRORS as exc:
            self._io.stop()
            raise TransportUnavailable(f"RabbitMQ reader: {exc!r}") from exc

    def _consume(self) -> None:  # on the I/O thread
        channel = self._io.connection.default_channel
        # no prefetch cap: a browser holds every letter unacked until it stops, and reembed
        # what it read until its re-send is confirmed; a capped reader would stall there
        channel.basic_qos(0, 0, False)
        for topic, queue in self._queues.items():
            queue = queue.bind(channel)
            queue.declare()
            # counted before consuming: later counts miss what is on its way to this reader
            self._ready_at_start[topic] = queue.queue_declare(passive=True)[1]

            def deliver(message: Any, topic: str = topic) -> None:
                offset = self._received[topic]
                self._received[topic] += 1
                record = _record(message, topic)._replace(offset=offset)
                self._loop.call_soon_threadsafe(self._arrive, message.delivery_tag, record)

            # a groupless reader from the end has nothing to keep: the broker forgets on delivery
            kombu.Consumer(channel, [queue], on_message=deliver, auto_declare=False,
                           no_ack=self._group is None and not self._browse).consume()

    def _arrive(self, tag: int, record: Record) -> None:
        self._buffer.put_nowait((tag, record))
        self._arrived.set()

    async def stop(self) -> None:
        self._io.stop()  # closing the channel returns every unacked delivery to its queue

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        self._check()
        if self._buffer.empty():
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
            self._check()
        out: list[Record] = []
        while len(out) < max_records and not self._buffer.empty():
            tag, record = self._buffer.get_nowait()
            self._handed[record.topic] += 1
            self._unacked.append(tag)
            out.append(record)
        return out

    def _check(self) -> None:
        try:
            self._io.check()
        except ConnectionError as exc:
            raise TransportUnavailable(str(exc)) from exc

    async def commit(self) -> None:
        if self._group is None or not self._unacked:
            return
        tags, self._unacked = self._unacked, []

        def ack() -> None:
            channel = self._io.connection.default_channel
            for tag in tags:
                channel.basic_ack(tag)
        try:
            await self._io.run(ack)
        except _BROKER_ERRORS as exc:  # unacked deliveries go back to the queue: replayed
            raise TransportUnavailable(f"RabbitMQ ack: {exc!r}") from exc

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """What this reader received plus what waits in the queue. Exact at start; later, a
        delivery on its way to this reader is in neither count."""
        def ends() -> dict[str, int]:  # on the I/O thread, where deliveries are counted
            channel = self._io.connection.default_channel
            return {t: max(self._ready_at_start[t],
                           self._received[t] + channel.queue_declare(q.name, passive=True)[1])
                    for t, q in self._queues.items()}
        try:
            counted = await self._io.run(ends)
        except _BROKER_ERRORS as exc:
            raise TransportUnavailable(f"RabbitMQ queue depth: {exc!r}") from exc
        return {TopicPartition(t, 0): end for t, end in counted.items()}

    async def position(self, tp: TopicPartition) -> int:
        return self._handed[tp.topic]


async def ensure_topics(settings: Settings, names: Sequence[str],
                        groups: Mapping[str, Sequence[str]]) -> None:
    """Declare every topic's exchange, each dead-letter queue and each group's queues."""
    with _connection(settings) as conn:
        channel = conn.default_channel
        for name in names:
            _exchange(settings, name).declare(channel=channel)
            if name.endswith(DLQ_SUFFIX):
                dead_letter_queue(settings, name).bind(channel).declare()
        for group_id, topics in groups.items():
            for topic in topics:
                consumer_queue(settings, group_id, topic).bind(channel).declare()


def tap_queue(settings: Settings, topic: str, name: str) -> kombu.Queue:
    """A queue that keeps everything published to ``topic`` from now on (the tests' ``Tap``).
    RabbitMQ drops what no queue is bound to when it arrives."""
    return kombu.Queue(f"{settings.rabbitmq_namespace}.tap.{name}.{topic}",
                       _exchange(settings, topic), routing_key=topic, durable=True,
                       queue_arguments={"x-queue-type": "quorum"})
