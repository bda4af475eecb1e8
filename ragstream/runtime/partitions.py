"""Where each assigned partition stands: paused until when, and the next offset to commit.
The runtime asks it to pause, resume, commit and report lag; it owns no policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from ragstream.transport.base import Consumer, Record, TopicPartition


@dataclass(slots=True)
class _State:
    next_offset: int | None = None
    paused_until: float | None = None


class Partitions:
    def __init__(self, consumer: Consumer):
        self._consumer = consumer
        self._state: dict[TopicPartition, _State] = {}

    def assigned(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._state.setdefault(tp, _State())

    def revoked(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._state.pop(tp, None)

    def pause_from(self, records: list[Record], delay_s: float) -> int:
        """Rewind each partition of ``records`` to its first offset there and pause it for
        ``delay_s``: the batch is replayed later, and the loop keeps polling (so the consumer
        stays in its group). Returns how many partitions were paused."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault(r.tp, r.offset)
        assigned = self._consumer.assignment()
        paused = [tp for tp in first if tp in assigned]
        until = time.monotonic() + delay_s
        for tp in paused:
            self._consumer.seek(tp, first[tp])
            self._state.setdefault(tp, _State()).paused_until = until
        self._consumer.pause(paused)
        return len(paused)

    def resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, st in self._state.items()
               if st.paused_until is not None and st.paused_until <= now]
        if due:
            for tp in due:
                self._state[tp].paused_until = None
            assigned = self._consumer.assignment()
            self._consumer.resume([tp for tp in due if tp in assigned])

    def commit_offsets(self, records: list[Record]) -> dict[TopicPartition, int]:
        """The next offset of every partition in ``records`` that is still ours, noted for lag."""
        last: dict[tuple[str, int], int] = {}
        for r in records:  # in offset order per partition: the last one wins
            last[r[0], r[1]] = r[2]  # plain tuples: a TopicPartition per record cost ~1 µs/event
        assigned = self._consumer.assignment()
        owned: dict[TopicPartition, int] = {}
        for (t, p), offset in last.items():
            tp = TopicPartition(t, p)
            self._state.setdefault(tp, _State()).next_offset = offset + 1
            if tp in assigned:
                owned[tp] = offset + 1
        return owned

    def lags(self) -> Iterator[tuple[TopicPartition, int]]:
        """Records behind the end, for each assigned partition whose position and end are known."""
        for tp in self._consumer.assignment():
            state = self._state.get(tp)
            high = self._consumer.highwater(tp)
            if state is not None and state.next_offset is not None and high is not None:
                yield tp, max(high - state.next_offset, 0)
