"""What one poison event costs: the isolation retries the whole batch, then bisects without new
retries, so the number of ``process`` calls grows with log2 of the batch, not with its size."""

from __future__ import annotations

import math

from producers.events import document_upserted
from ragstream.runtime import Batch
from ragstream.transport.memory import MemoryBroker
from tests.helpers import running
from tests.test_runtime_unit import Recorder, dead_letters, memory_settings, publish, wait_committed

BATCH = 500


class Counting(Recorder):
    def __init__(self, poison: set[str]):
        super().__init__(poison=poison)
        self.processings = 0  # events seen over all calls (each is a re-chunk, re-embed...)

    async def process(self, batch: Batch) -> None:
        self.processings += len(batch.events)
        await super().process(batch)


async def test_one_poison_event_in_a_batch_of_500_costs_log2_process_calls():
    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(BATCH)])
    settings = memory_settings(batch_max_records=BATCH)
    worker = Counting(poison={"d317"})
    async with running(worker, settings, broker=broker):
        await wait_committed(broker)

    bound = settings.max_attempts + 2 * math.ceil(math.log2(BATCH))
    print(f"process calls: {worker.calls} (bound {bound}); event-processings: {worker.processings}")
    assert worker.calls <= bound
    assert worker.processings <= settings.max_attempts * BATCH + 2 * BATCH
    assert sorted(worker.sink.items) == sorted((f"d{i}", 1) for i in range(BATCH) if i != 317)
    [letter] = dead_letters(broker)
    assert letter["x-original-offset"] == "317"
    assert letter["x-error-reason"] == "retries_exhausted"
    assert letter["x-attempts"] == str(worker.poison_calls)  # every call it was in, all failed
