"""Typed subscriptions for downstream consumers of result topics.

    async for envelope, record in subscribe(settings, "kg.changes.v1", group="my-service"):
        ...

Envelopes are typed: ``envelope.data`` is the topic's payload model. With a group, offsets are committed after the events of a fetched batch were all handed out and
the next batch is asked for: at-least-once, so dedupe on ``envelope.id``. Without a group it reads
every partition from the end (or the beginning) and commits nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiokafka

from ragstream.config import Settings
from ragstream.transport.base import Record
from ragstream.transport.kafka import connection_options
from schemas.catalogue import DecodeError, decode, topic
from schemas.envelope import Envelope

log = logging.getLogger(__name__)


async def subscribe(settings: Settings, topic_name: str, *, group: str | None = None,
                    from_beginning: bool = False) -> AsyncIterator[tuple[Envelope, Record]]:
    spec = topic(topic_name)
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
                    record = Record(m.topic, m.partition, m.offset, m.key, m.value or b"",
                                    list(m.headers or ()), m.timestamp)
                    try:
                        envelope = decode(spec, record.value, settings.max_event_bytes)
                    except DecodeError as exc:
                        log.warning("skipping undecodable event", extra={
                            "topic": m.topic, "offset": m.offset, "reason": exc.reason})
                        continue
                    yield envelope, record
            if group is not None and batches:
                await consumer.commit()
    finally:
        await consumer.stop()
