"""What the worker runtime costs: a noop worker on the full runtime (decode, validate, metrics,
DLQ routing, commit per batch) against a raw aiokafka getmany loop, over the same pre-produced
events on the same Tansu broker, in one run.

Baseline: a raw ``getmany`` loop that commits after every batch (the least an at-least-once
consumer does). For reference: the same loop without commits (``raw_no_commit_eps``), and with
``json.loads`` of every message (``raw_json_eps``), the least a consumer that reads its events does.

    .venv/bin/python bench/runtime_overhead.py [--events 200000] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiokafka

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from producers.events import document_upserted  # noqa: E402
from ragstream.publisher import encode  # noqa: E402
from ragstream.config import Settings  # noqa: E402
from ragstream.runner import make_runtime  # noqa: E402
from ragstream.runtime import Batch  # noqa: E402
from ragstream.transport.kafka import KafkaProducer, connection_options, ensure_topics  # noqa: E402
from workers.noop import NoopWorker  # noqa: E402

TOPIC = "documents.v1"
BATCH = 500


async def produce(settings: Settings, n: int, traced: bool = False) -> None:
    """``n`` small documents; with ``traced``, each starts its own sampled trace."""
    text = "Showers continued throughout the week in the Bahia cocoa zone."
    producer = KafkaProducer(settings)
    await producer.start()
    try:
        for start in range(0, n, 5000):
            await producer.send_all([encode(document_upserted(
                f"doc-{i}", text, version=1,
                traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" if traced else None))
                for i in range(start, min(start + 5000, n))])
    finally:
        await producer.stop()


async def raw_loop(settings: Settings, n: int, group: str, commit: bool,
                   parse: bool = False) -> float:
    consumer = aiokafka.AIOKafkaConsumer(TOPIC, **connection_options(settings), group_id=group,
                                         enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if batches and started is None:
                started = time.perf_counter()
            seen += sum(len(m) for m in batches.values())
            if parse:
                for msgs in batches.values():
                    for m in msgs:
                        json.loads(m.value)
            if commit and batches:
                await consumer.commit()
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


class TimedNoop(NoopWorker):
    def __init__(self, n: int):
        self.n, self.seen = n, 0
        self.started = self.finished = None
        self.done = asyncio.Event()

    async def process(self, batch: Batch) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        self.seen += len(batch.events)
        if self.seen >= self.n:
            self.finished = time.perf_counter()
            self.done.set()


async def runtime_loop(settings: Settings, n: int, group: str) -> tuple[float, dict]:
    worker = TimedNoop(n)
    runtime = make_runtime(worker, settings, group_id=group)
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(worker.done.wait(), 600)
    runtime.stop()
    await task
    eps = n / (worker.finished - worker.started)
    processed = runtime.metrics.processed.labels("noop", TOPIC)._value.get()
    return eps, {"processed": processed}


async def main() -> None:
    parser = harness.parser(__doc__, quick="20k events")
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    n = 20_000 if args.quick else args.events

    with harness.tansu() as broker:
        settings = harness.kafka_settings(broker, batch_max_records=BATCH, batch_timeout_ms=200)
        await ensure_topics(settings, [TOPIC, TOPIC + ".dlq"], 6)
        t0 = time.perf_counter()
        await produce(settings, n)
        produce_s = time.perf_counter() - t0
        raw_nc = await raw_loop(settings, n, "bench.raw-nocommit", commit=False)
        raw = await raw_loop(settings, n, "bench.raw", commit=True)
        raw_json = await raw_loop(settings, n, "bench.raw-json", commit=True, parse=True)
        project, extra = await runtime_loop(settings, n, "bench.runtime")

    ratio = project / raw
    harness.table([("loop", "<44"), ("events/s", ">12,.0f")], [
        ("raw aiokafka getmany, no commit", raw_nc),
        ("raw aiokafka getmany + commit per batch", raw, "(baseline)"),
        ("raw getmany + json.loads + commit", raw_json),
        ("ragstream runtime, noop worker", project, "(project)")])
    print(f"ratio project/baseline = {ratio:.2f} (target >= 0.7); "
          f"{n:,} events pre-produced in {produce_s:.1f}s; batch {BATCH}")
    harness.report("runtime_overhead", "events_per_s", round(raw), round(project),
                   round(ratio, 3), "events/s", events=n, batch=BATCH,
                   raw_no_commit_eps=round(raw_nc), ratio_vs_no_commit=round(project / raw_nc, 3),
                   raw_json_eps=round(raw_json), ratio_vs_raw_json=round(project / raw_json, 3),
                   processed=extra["processed"])


if __name__ == "__main__":
    asyncio.run(main())
