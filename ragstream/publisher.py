"""The Publisher: validate, then send with acks=all, keyed by subject. Nothing invalid leaves it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext

from ragstream import tracing
from ragstream.config import Settings
from ragstream.transport import make_producer
from ragstream.transport.base import OutMessage, Producer
from schemas import cloudevents
from schemas.catalogue import TOPICS, DecodeError, topic, validate
from schemas.envelope import Envelope

_TOPIC_OF_TYPE = {event_type: spec.name for spec in TOPICS.values() for event_type in spec.events}


def topic_for(event_type: str) -> str:
    try:
        return _TOPIC_OF_TYPE[event_type]
    except KeyError:
        raise DecodeError("unknown_type", f"no topic carries {event_type!r}") from None


def encode(envelope: Envelope, topic_name: str | None = None, max_bytes: int | None = None,
           mode: cloudevents.Mode = "structured") -> OutMessage:
    """Validate an envelope for its topic and turn it into a keyed message in the CloudEvents
    content ``mode``, or raise DecodeError."""
    name = topic_name or topic_for(envelope.type)
    validate(topic(name), envelope)
    value, headers = cloudevents.encode(envelope, mode)
    if max_bytes is not None and len(value) > max_bytes:
        raise DecodeError("oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit")
    return OutMessage(name, envelope.subject.encode(), value, headers)


class Publisher:
    """``async with Publisher(settings) as pub: await pub.publish([envelope, ...])``."""

    def __init__(self, settings: Settings, producer: Producer | None = None):
        self.settings = settings
        self._producer = producer or make_producer(settings)

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._producer.stop()

    async def publish(self, envelopes: Iterable[Envelope], topic_name: str | None = None) -> int:
        """Validate every envelope first; publish all or none of them. Returns the count sent."""
        messages = [encode(e, topic_name, self.settings.max_event_bytes,
                           self.settings.cloudevents_mode) for e in envelopes]
        with tracing.publishing(messages) if tracing.ENABLED else nullcontext(messages) as messages:
            await self._producer.send_all(messages)
        return len(messages)

    async def send_raw(self, messages: Sequence[OutMessage]) -> None:
        """Send already-encoded messages unchanged (dead-letter replay keeps the original bytes)."""
        with tracing.publishing(messages) if tracing.ENABLED else nullcontext(messages) as messages:
            await self._producer.send_all(messages)
