"""Kafka through aiokafka: the production transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import aiokafka
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError, KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError,
    RecordListTooLargeError, TopicAlreadyExistsError, UnknownError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import OffsetAndMetadata
from aiokafka.structs import TopicPartition as KafkaTP

from ragstream.config import Settings
from ragstream.errors import CommitLost, MessageTooLarge, TransportUnavailable
from ragstream.transport.base import (
    OutMessage, Reader, RebalanceCallback, Record, TopicPartition,
)


def connection_options(settings: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_username
        if settings.kafka_password is not None:
            opts["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        # ``aiokafka.helpers`` is not loaded by ``import aiokafka``: reached through the package,
        # every TLS setting raised AttributeError before a connection was tried
        key_password = settings.kafka_ssl_key_password
        opts["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password else None)
    return opts


@contextlib.contextmanager
def _typed_errors(what: str) -> Iterator[None]:
    """aiokafka's errors as the core's, so nothing above the transport imports aiokafka."""
    try:
        yield
    except CommitFailedError as exc:
        raise CommitLost(str(exc)) from exc
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise TransportUnavailable(f"kafka {what}: {exc!r}") from exc
    except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
        raise MessageTooLarge(f"kafka {what}: {exc}") from exc


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_revoked: RebalanceCallback, on_assigned: RebalanceCallback):
        self._on_revoked, self._on_assigned = on_revoked, on_assigned

    async def on_partitions_revoked(self, revoked):
        await self._on_revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned):
        await self._on_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})


class KafkaConsumer:
    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        group_id: str,
        on_revoked: RebalanceCallback,
        on_assigned: RebalanceCallback,
    ):
        self._topics = list(topics)
        self._listener = _Listener(on_revoked, on_assigned)
        self._consumer = aiokafka.AIOKafkaConsumer(
            **connection_options(settings),
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(settings.max_event_bytes * 4, 52428800),
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            # max_poll_interval bounds one batch's processing time before the group evicts us
            max_poll_interval_ms=300_000,
        )

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=self._listener)
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value or b"",
                   list(m.headers or ()), m.timestamp)
            for msgs in batches.values()
            for m in msgs
        ]

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        self._consumer.pause(*(KafkaTP(*tp) for tp in tps))

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        self._consumer.resume(*(KafkaTP(*tp) for tp in tps))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTP(*tp), offset)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with _typed_errors("commit"):
            await self._consumer.commit({KafkaTP(*tp): OffsetAndMetadata(off, "")
                                         for tp, off in offsets.items()})

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._consumer.highwater(KafkaTP(*tp))


class IdempotenceRefused(RuntimeError):
    """The broker refused the idempotent producer's InitProducerId: a configuration mismatch,
    so the process stops with this message instead of aiokafka's bare ``UnknownError()``."""


class KafkaProducer:
    def __init__(self, settings: Settings):
        self._idempotence = settings.kafka_idempotence
        self._bootstrap = settings.kafka_bootstrap
        self._producer = aiokafka.AIOKafkaProducer(
            **connection_options(settings),
            acks="all",
            enable_idempotence=settings.kafka_idempotence,
            linger_ms=5,
            max_request_size=settings.max_message_bytes,
            compression_type=None,
        )

    async def start(self) -> None:
        try:
            with _typed_errors("connect"):
                await self._producer.start()
        except BaseException as exc:
            await self._producer.stop()  # a failed start leaves its client open
            if self._idempotence and isinstance(exc, UnknownError):
                raise IdempotenceRefused(
                    f"the Kafka broker at {self._bootstrap} refused InitProducerId, which the "
                    "idempotent producer (RAGSTREAM_KAFKA_IDEMPOTENCE=true) needs; a broker "
                    "without it, like the embedded Tansu 0.6, needs "
                    "RAGSTREAM_KAFKA_IDEMPOTENCE=false") from exc
            raise

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_all(self, messages: Sequence[OutMessage]) -> None:
        with _typed_errors("produce"):
            futures = [
                await self._producer.send(m.topic, m.value, key=m.key, headers=m.headers or None)
                for m in messages
            ]
            if futures:
                await asyncio.gather(*futures)


class KafkaReader(Reader):
    """With a group, a member of a Kafka consumer group; without, every partition assigned to
    it, positioned at the beginning or the end."""

    def __init__(self, settings: Settings, topics: Sequence[str], group: str | None,
                 from_beginning: bool):
        self._topics, self._group, self._from_beginning = list(topics), group, from_beginning
        self._session_timeout_s = settings.session_timeout_ms / 1000
        self._assigned = asyncio.Event()
        self._handed: dict[KafkaTP, int] = {}  # the next offset, past what was handed out
        self._first_highwater: dict[TopicPartition, int] = {}
        self._consumer = aiokafka.AIOKafkaConsumer(
            **connection_options(settings), group_id=group, client_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(settings.max_event_bytes * 4, 52428800),
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
        )

    async def start(self) -> None:
        with _typed_errors("connect"):
            await self._consumer.start()
        try:
            with _typed_errors("position"):
                await (self._join() if self._group else self._assign())
        except BaseException:
            await self._consumer.stop()
            raise

    async def _join(self) -> None:
        async def assigned(_: set[TopicPartition]) -> None:
            self._assigned.set()

        async def revoked(_: set[TopicPartition]) -> None:
            self._handed.clear()  # the new owner commits its own positions

        self._consumer.subscribe(self._topics, listener=_Listener(revoked, assigned))
        try:  # aiokafka joins in the background; wait for it, so start returns positioned
            await asyncio.wait_for(self._assigned.wait(), 3 * self._session_timeout_s)
        except TimeoutError:
            raise TransportUnavailable(f"kafka group {self._group}: no assignment") from None
        for tp in self._consumer.assignment():  # resolve each starting position now
            await self._consumer.position(tp)

    async def _assign(self) -> None:
        await self._consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = []
        for topic in self._topics:
            numbers = self._consumer.partitions_for_topic(topic)
            if not numbers:
                raise ValueError(f"no topic {topic!r} on the broker")
            partitions += [KafkaTP(topic, p) for p in sorted(numbers)]
        self._consumer.assign(partitions)
        if self._from_beginning:
            await self._consumer.seek_to_beginning(*partitions)
        else:
            await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the lazy seek, so what is published next is read
            await self._consumer.position(tp)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        with _typed_errors("fetch"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out = []
        for tp, msgs in batches.items():
            self._handed[tp] = msgs[-1].offset + 1
            self._first_highwater.setdefault(TopicPartition(*tp), self._consumer.highwater(tp))
            out += [Record(m.topic, m.partition, m.offset, m.key, m.value or b"",
                           list(m.headers or ()), m.timestamp) for m in msgs]
        return out

    async def commit(self) -> None:
        if self._group and self._handed:
            with _typed_errors("commit"):
                await self._consumer.commit({tp: OffsetAndMetadata(offset, "")
                                             for tp, offset in self._handed.items()})

    async def end_offsets(self) -> dict[TopicPartition, int]:
        with _typed_errors("end offsets"):
            ends = await self._consumer.end_offsets(list(self._consumer.assignment()))
        return {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def position(self, tp: TopicPartition) -> int:
        with _typed_errors("position"):
            return await self._consumer.position(KafkaTP(*tp))

    async def caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        """Also up to the first fetch's high watermark: Tansu answers end offsets with its last
        batch's first offset + 1, and a reader that stopped there missed the batch's rest."""
        return all([await self.position(tp) >= max(end, self._first_highwater.get(tp, 0))
                    for tp, end in ends.items()])


async def committed_offsets(settings: Settings, group: str,
                            tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Another group's committed offsets (0 where none), read without joining the group."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    with _typed_errors("committed offsets"):
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(
                group, partitions=[KafkaTP(*tp) for tp in tps])
        finally:
            await admin.close()
    return {tp: max(offsets[KafkaTP(*tp)].offset, 0) if KafkaTP(*tp) in offsets else 0
            for tp in tps}


async def ensure_topics(settings: Settings, names: Sequence[str], partitions: int) -> None:
    """Create missing topics; existing ones are left as they are. Each takes the largest message
    the producers send: a broker default below it refused the dead letter of an event near the
    size limit, and the worker crash-looped on it."""
    rf = settings.topic_replication_factor
    configs = {"max.message.bytes": str(settings.max_message_bytes)}
    if rf >= 3:
        configs["min.insync.replicas"] = "2"  # acks=all then survives one broker down
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, rf, topic_configs=configs)
                   for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
