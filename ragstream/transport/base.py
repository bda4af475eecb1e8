"""What the worker runtime needs from a message transport, and nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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


class Reader(Protocol):
    """Reads topics outside a worker: subscriptions, tails, dead-letter replay, re-embedding and
    the gateway's reply routing. ``ragstream.transport.open_reader`` makes one::

        async with open_reader(settings, ["kg.changes.v1"], group="my-service") as reader:
            async for record in reader:
                ...

    - With a group, the reader starts where the group last committed (or, the first time, at
      the beginning or the end), and ``commit`` saves its position. Without one, it starts at
      the beginning or the end, and its position is thrown away when it stops.
    - ``start`` returns once the reader is positioned: whatever is published after it is read.
    - ``end_offsets`` and ``position`` let a one-shot reader stop once it has read everything
      that was there when it started (``caught_up``).

    Implementations subclass this protocol to inherit the methods written out here.
    """

    # whether what a group commits stays readable by others (a log: Kafka), or is gone (a queue)
    replayable: bool = True

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]: ...
    async def commit(self) -> None:
        """Save the group's position past every record handed out so far (no group: nothing)."""
    async def end_offsets(self) -> dict[TopicPartition, int]:
        """For each partition read, the offset the next record published to it will get."""
    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this reader will hand out from ``tp``."""

    async def caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        """Whether every partition's position has reached ``ends`` (an earlier end_offsets)."""
        return all([await self.position(tp) >= end for tp, end in ends.items()])

    def __aiter__(self) -> AsyncIterator[Record]:
        """Records as they come; a batch is committed when the next one is asked for, so
        iterating with a group is at-least-once."""
        return self._records()

    async def _records(self) -> AsyncIterator[Record]:
        while True:
            batch = await self.getmany(500, 500)
            for record in batch:
                yield record
            if batch:
                await self.commit()

    async def __aenter__(self) -> Reader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
