"""Retry and isolation: how a failing batch becomes processed events plus dead letters.

The whole batch is retried up to ``max_attempts`` times, with backoff: most failures are
transient and a retry of everything is the cheapest cure. If it still fails, the batch is split
in halves, each half tried once, and a failing half split again, until the failing event stands
alone and is dead-lettered; every half that succeeds is kept. One poison event in a batch of
``n`` thus costs at most ``max_attempts + 2·⌈log2 n⌉`` calls of ``process``. (Retrying at every
level of the split, as the runtime once did, cost 39 calls and ~3,500 event-processings for
one poison event among 500, and the embedding worker re-embeds on every call.)

``PermanentError`` skips the retries. Unavailability (backpressure) and ``WiringError`` are not
this module's business: they propagate to the runtime untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ragstream.errors import PermanentError, WiringError, unavailable_types
from ragstream.logs import event_id_var, trace_id_var
from ragstream.runtime.batch import Batch, DeadLetter, Event, Worker

log = logging.getLogger(__name__)


class Isolation:
    def __init__(self, worker: Worker, max_attempts: int, backoff: Callable[[int], float],
                 on_retry: Callable[[list[Event]], None]):
        self._worker = worker
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._on_retry = on_retry

    async def run(self, events: list[Event], dead: list[DeadLetter]) -> list[Batch]:
        """Process and flush ``events``; return the batches that succeeded, and add the events
        that kept failing to ``dead``."""
        attempt = 0
        while True:
            attempt += 1
            batch, error = await self._attempt(events)
            if error is None:
                return [batch]
            if isinstance(error, PermanentError) or attempt >= self._max_attempts:
                return await self._bisect(events, error, attempt, dead)
            self._on_retry(events)
            log.warning("batch failed, retrying", extra={
                "attempt": attempt, "events": len(events), "error": repr(error)[:500]})
            await asyncio.sleep(self._backoff(attempt))

    async def _bisect(self, events: list[Event], error: Exception, attempts: int,
                      dead: list[DeadLetter]) -> list[Batch]:
        """``events`` failed ``attempts`` times with ``error``: split without new retries."""
        if len(events) == 1:
            fallback = "permanent" if isinstance(error, PermanentError) else "retries_exhausted"
            reason = getattr(error, "reason", fallback)
            dead.append(DeadLetter(events[0].record, type(error).__name__, reason,
                                   str(error) or repr(error), "process", attempts))
            return []
        mid = len(events) // 2
        done: list[Batch] = []
        for half in (events[:mid], events[mid:]):
            batch, half_error = await self._attempt(half)
            if half_error is None:
                done.append(batch)
            else:
                done += await self._bisect(half, half_error, attempts + 1, dead)
        return done

    async def _attempt(self, events: list[Event]) -> tuple[Batch, Exception | None]:
        """One call of ``process`` and the sink flushes: the batch, and the error if it failed."""
        worker = self._worker
        batch = Batch(events, worker.name, worker.sinks)
        event_id_var.set(events[0].id)
        trace_id_var.set(events[0].envelope.trace_id)
        try:
            await worker.process(batch)
            for sink_name, items in batch.writes.items():
                await worker.sinks[sink_name].flush(items)
        except (WiringError, *unavailable_types()):
            raise
        except Exception as exc:  # noqa: BLE001  an error of this input (or a bug): isolate it
            return batch, exc
        return batch, None
