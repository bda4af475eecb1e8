"""What the worker runtime needs from a message transport, and nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

Headers = Sequence[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    """One consumed message, as it came off the wire (a tuple: cheap to make per message)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


RebalanceCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class Consumer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, tps: Sequence[TopicPartition]) -> None: ...
    def resume(self, tps: Sequence[TopicPartition]) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition)."""
    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as last seen by a fetch, if known."""


class Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send_all(self, messages: Sequence[OutMessage]) -> None:
        """Send and wait until every message is acknowledged; raise if any is not."""
