"""Typed subscriptions for downstream consumers of result topics.

    async for envelope, record in subscribe(settings, "kg.changes.v1", group="my-service"):
        ...

Envelopes are typed: ``envelope.data`` is the topic's payload model. With a group, what a batch
handed out is committed when the next batch is asked for: at-least-once, so dedupe on
``envelope.id``. On Kafka, without a group, it reads every partition from the end (or the
beginning) and commits nothing. On RabbitMQ a group is required: a durable queue per group keeps
the events while the subscriber is away, and only what arrives after the queue exists.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiokafka

from ragstream.config import Settings
from ragstream.transport.base import Record, TopicPartition
from ragstream.transport.kafka import connection_options
from schemas.catalogue import DecodeError, decode, topic
from schemas.envelope import Envelope

log = logging.getLogger(__name__)


async def subscribe(settings: Settings, topic_name: str, *, group: str | None = None,
                    from_beginning: bool = False) -> AsyncIterator[tuple[Envelope, Record]]:
    spec = topic(topic_name)
    # aclosing: closing this stream must close the consumer too, not leave it to the GC
    async with contextlib.aclosing(records(settings, topic_name, group, from_beginning)) as rs:
        async for record in rs:
            try:
                envelope = decode(spec, record.value, settings.max_event_bytes)
            except DecodeError as exc:
                log.warning("skipping undecodable event", extra={
                    "topic": record.topic, "offset": record.offset, "reason": exc.reason})
                continue
            yield envelope, record


async def records(settings: Settings, topic_name: str, group: str | None = None,
                  from_beginning: bool = False) -> AsyncIterator[Record]:
    """A topic's raw records, undecoded (dead-letter topics hold bytes that may not decode)."""
    if settings.transport == "rabbitmq":
        if group is None:
            raise ValueError("on RabbitMQ a subscriber needs a group: only a bound queue keeps "
                             "events for it")
        async for record in _rabbitmq_records(settings, topic_name, group):
            yield record
        return
    consumer = aiokafka.AIOKafkaConsumer(
        topic_name, **connection_options(settings), group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for m in msgs:
                    yield Record(m.topic, m.partition, m.offset, m.key, m.value or b"",
                                 list(m.headers or ()), m.timestamp)
            if group is not None and batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def _rabbitmq_records(settings: Settings, topic_name: str,
                            group: str) -> AsyncIterator[Record]:
    from ragstream.transport.rabbitmq import RabbitConsumer

    async def nothing(_: set[TopicPartition]) -> None:
        return None

    consumer = RabbitConsumer(settings, [topic_name], group, nothing, nothing)
    await consumer.start()
    try:
        while True:
            records = await consumer.getmany(500, settings.batch_max_records)
            for record in records:
                yield record
            if records:
                await consumer.commit({records[0].tp: records[-1].offset + 1})
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: by type, by subject glob, and by data fields' values."""

    types: frozenset[str] = frozenset()
    subject_glob: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, types: Sequence[str], subject_glob: str | None,
              where: Sequence[str]) -> EventFilter:
        fields = {}
        for clause in where:
            name, sep, value = clause.partition("=")
            if not sep or not name:
                raise ValueError(f"--where takes field=value, not {clause!r}")
            fields[name] = value
        return cls(frozenset(types), subject_glob, fields)

    def matches(self, envelope: Envelope) -> bool:
        if self.types and envelope.type not in self.types:
            return False
        if self.subject_glob and not fnmatch.fnmatchcase(envelope.subject, self.subject_glob):
            return False
        data = envelope.data.model_dump(mode="json")
        return all(str(data.get(name)) == value for name, value in self.fields.items())
