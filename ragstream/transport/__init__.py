"""Transport selection: Kafka (production), RabbitMQ (same workers), memory (unit tests)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ragstream.config import Settings
from ragstream.transport.base import Consumer, Producer, Reader

if TYPE_CHECKING:
    from ragstream.transport.memory import MemoryBroker


def make_producer(settings: Settings) -> Producer:
    if settings.transport == "rabbitmq":
        from ragstream.transport.rabbitmq import RabbitProducer

        return RabbitProducer(settings)
    if settings.transport == "kafka":
        from ragstream.transport.kafka import KafkaProducer

        return KafkaProducer(settings)
    raise ValueError(f"the {settings.transport} transport needs its broker passed in (tests only)")


def consumer_factory(settings: Settings) -> Callable[..., Consumer]:
    if settings.transport == "rabbitmq":
        from ragstream.transport.rabbitmq import RabbitConsumer

        return functools.partial(RabbitConsumer, settings)
    if settings.transport == "kafka":
        from ragstream.transport.kafka import KafkaConsumer

        return functools.partial(KafkaConsumer, settings)
    raise ValueError(f"the {settings.transport} transport needs its broker passed in (tests only)")


def open_reader(settings: Settings, topics: Sequence[str], *, group: str | None = None,
                from_beginning: bool = False, broker: MemoryBroker | None = None) -> Reader:
    """A reader of ``topics`` (see ``Reader``); use it as ``async with``. ``group`` is the full
    group name (``settings.group_id(...)``, or a subscriber's own); the memory transport reads
    the ``broker`` passed in."""
    if settings.transport == "rabbitmq":
        from ragstream.transport.rabbitmq import RabbitReader

        return RabbitReader(settings, topics, group, from_beginning)
    if settings.transport == "kafka":
        from ragstream.transport.kafka import KafkaReader

        return KafkaReader(settings, topics, group, from_beginning)
    if broker is not None:
        from ragstream.transport.memory import MemoryReader

        return MemoryReader(broker, topics, group, from_beginning)
    raise ValueError(f"the {settings.transport} transport needs its broker passed in (tests only)")


async def ensure_topics(settings: Settings, names: Sequence[str], partitions: int,
                        groups: Mapping[str, Sequence[str]] | None = None) -> None:
    """Create what the topics need on the broker; what exists already is left as it is.

    ``groups`` maps each deployed consumer group to the topics it reads. Kafka keeps its log for
    groups that start later; RabbitMQ keeps a message only if a queue is bound when it arrives,
    so there each group's queues are declared here, before anything is published."""
    if settings.transport == "rabbitmq":
        from ragstream.transport import rabbitmq

        await rabbitmq.ensure_topics(settings, names, groups or {})
    else:
        from ragstream.transport import kafka

        await kafka.ensure_topics(settings, names, partitions)
