"""An in-process broker for fast unit tests. Not a production transport.

It keeps Kafka's semantics that the runtime relies on: keyed partitions, offsets, committed offsets
per group, pause, resume and seek. Every consumer of a group gets all partitions (no rebalancing).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from ragstream.transport.base import (
    OutMessage, Reader, RebalanceCallback, Record, TopicPartition,
)


class MemoryBroker:
    def __init__(self, partitions: int = 4):
        self.partitions = partitions
        self.logs: dict[TopicPartition, list[Record]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}
        self._changed = asyncio.Event()

    def _log(self, tp: TopicPartition) -> list[Record]:
        return self.logs.setdefault(tp, [])

    def append(self, message: OutMessage) -> Record:
        partition = zlib.crc32(message.key) % self.partitions if message.key else 0
        log = self._log(TopicPartition(message.topic, partition))
        record = Record(message.topic, partition, len(log), message.key, message.value,
                        list(message.headers))
        log.append(record)
        self._changed.set()
        return record

    def records(self, topic: str) -> list[Record]:
        return [r for tp, log in sorted(self.logs.items()) if tp.topic == topic for r in log]

    async def wait_for_change(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass


class MemoryProducer:
    def __init__(self, broker: MemoryBroker):
        self._broker = broker

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_all(self, messages: Sequence[OutMessage]) -> None:
        for message in messages:
            self._broker.append(message)


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, topics: Sequence[str], group_id: str,
                 on_revoked: RebalanceCallback, on_assigned: RebalanceCallback):
        self._broker, self._topics, self._group = broker, list(topics), group_id
        self._on_revoked, self._on_assigned = on_revoked, on_assigned
        self._assigned = {TopicPartition(t, p) for t in topics for p in range(broker.partitions)}
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()

    async def start(self) -> None:
        for tp in self._assigned:
            self._positions[tp] = self._broker.committed.get((self._group, tp), 0)
        await self._on_assigned(set(self._assigned))

    async def stop(self) -> None:
        await self._on_revoked(set(self._assigned))

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        out = self._take(max_records)
        if not out:
            await self._broker.wait_for_change(timeout_ms / 1000)
            out = self._take(max_records)
        return out

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp in sorted(self._assigned - self._paused):
            log = self._broker._log(tp)
            position = self._positions[tp]
            chunk = log[position:position + max_records - len(out)]
            self._positions[tp] = position + len(chunk)
            out.extend(chunk)
            if len(out) >= max_records:
                break
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this consumer will hand out from ``tp``."""
        return self._positions[tp]

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        self._paused.update(tps)

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        self._paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._broker.committed[(self._group, tp)] = offset

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self._broker._log(tp))


class MemoryReader(Reader):
    """A consumer of the broker that starts at the beginning or the end unless its group
    committed a position (a groupless reader's name commits nothing)."""

    def __init__(self, broker: MemoryBroker, topics: Sequence[str], group: str | None,
                 from_beginning: bool):
        self._broker, self._group, self._from_beginning = broker, group, from_beginning
        self._consumer = MemoryConsumer(broker, topics, group or "", _nothing, _nothing)
        self._handed: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()
        for tp in self._consumer.assignment():
            if self._group is None or (self._group, tp) not in self._broker.committed:
                self._consumer.seek(tp, 0 if self._from_beginning else len(self._broker._log(tp)))

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Record]:
        records = await self._consumer.getmany(timeout_ms, max_records)
        for record in records:
            self._handed[record.tp] = record.offset + 1
        return records

    async def commit(self) -> None:
        if self._group:
            await self._consumer.commit(self._handed)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return {tp: len(self._broker._log(tp)) for tp in self._consumer.assignment()}

    async def position(self, tp: TopicPartition) -> int:
        return self._consumer._positions[tp]


async def _nothing(_: set[TopicPartition]) -> None:
    return None
