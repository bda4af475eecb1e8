"""Typed subscriptions for downstream consumers of result topics.

    async for envelope, record in subscribe(settings, "kg.changes.v1", group="my-service"):
        ...

Envelopes are typed: ``envelope.data`` is the topic's payload model. With a group, what a batch
handed out is committed when the next batch is asked for: at-least-once, so dedupe on
``envelope.id``. Without a group it reads from the end (or the beginning) and commits nothing.
On RabbitMQ only a group's durable queue keeps events while the subscriber is away, and only
what arrived after the queue existed; a groupless reader sees events from now on
(docs/transports.md).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ragstream.config import Settings
from ragstream.transport import open_reader
from ragstream.transport.base import Record
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
    async with open_reader(settings, [topic_name], group=group,
                           from_beginning=from_beginning) as reader:
        async for record in reader:
            yield record


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
