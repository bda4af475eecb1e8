"""What the durable embedded Kafka costs: Tansu with memory storage (the baseline: what ``make
run`` used before, and what the tests that never kill the broker still use) against Tansu on S3
storage from a local SeaweedFS (the project: ``ragstream up``'s default, which keeps every
acknowledged event and committed offset across a kill).

Both brokers run side by side for the whole run. Each round, for each mode in turn on a fresh
topic (4 partitions): a producer sends N keyed messages of ~170 bytes with acks=all, awaiting
them in windows of ``WINDOW``; then a consumer group reads them all, committing after every
batch. Produce rate: N over the time from the first send to the last ack. Consume rate: N over
the time from the partitions' assignment (the group join is excluded) to the last commit. Rounds
alternate the modes so that drift on a shared machine hits both alike; the best of each is
reported. Resident memory (VmRSS) of both brokers and of weed is read after the last round.

    .venv/bin/python bench/broker_storage.py [--messages 50000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiokafka  # noqa: E402

from bench import harness  # noqa: E402
from ragstream.stack import SeaweedFS, Tansu  # noqa: E402
from ragstream.transport.kafka import connection_options, ensure_topics  # noqa: E402

PARTITIONS = 4
WINDOW = 1_000  # sends in flight before the producer waits for their acks
KEYS = 1_000


def value(i: int) -> bytes:
    """~170 bytes, the size of a small envelope."""
    body = (f'{{"id":"{i:012d}","type":"ragstream.document.upserted","source":"bench",'
            f'"subject":"doc-{i % KEYS}","data":{{"doc_id":"doc-{i % KEYS}","version":1,'
            f'"text":"')
    return (body + "x" * (168 - len(body)) + '"}}').encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def brokers(folder: Path) -> Iterator[tuple[Tansu, Tansu, SeaweedFS]]:
    memory = Tansu(folder / "memory")
    weed = SeaweedFS(folder / "s3")
    durable = Tansu(folder / "s3", s3=weed)
    started = []
    try:
        for proc in (memory, weed, durable):  # weed before the broker that stores in it
            proc.start()
            started.append(proc)
        yield memory, durable, weed
    finally:
        for proc in reversed(started):  # the broker before its storage, so it can flush
            proc.stop()


async def produce(settings, topic: str, n: int) -> float:
    producer = aiokafka.AIOKafkaProducer(**connection_options(settings), acks="all",
                                         enable_idempotence=False)
    await producer.start()
    try:
        started = time.perf_counter()
        for first in range(0, n, WINDOW):
            pending = [await producer.send(topic, value(i), key=f"doc-{i % KEYS}".encode())
                       for i in range(first, min(first + WINDOW, n))]
            await asyncio.gather(*pending)
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()


class Joined(aiokafka.ConsumerRebalanceListener):
    """Starts the clock when the group hands out the partitions: the join is not the broker's
    storage at work, but every fetch after it is (aiokafka prefetches megabytes per partition,
    so a clock started at the first records in hand would time the client's buffer)."""

    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        if assigned and self.at is None:
            self.at = time.perf_counter()


async def consume(settings, topic: str, group: str, n: int) -> float:
    consumer = aiokafka.AIOKafkaConsumer(**connection_options(settings), group_id=group,
                                         enable_auto_commit=False,
                                         auto_offset_reset="earliest", max_poll_records=1_000)
    joined = Joined()
    consumer.subscribe([topic], listener=joined)
    await consumer.start()
    try:
        seen = 0
        while seen < n:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1_000), 60)
            seen += sum(len(msgs) for msgs in batches.values())
            if batches:
                await consumer.commit()
        return seen / (time.perf_counter() - joined.at)
    finally:
        await consumer.stop()


async def main() -> None:
    parser = harness.parser(__doc__, quick="5,000 messages, 1 round")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, rounds = (5_000, 1) if args.quick else (args.messages, args.rounds)

    results: dict[str, dict[str, list[float]]] = {
        mode: {"produce": [], "consume": []} for mode in ("memory", "s3")}
    with harness.workdir() as folder, brokers(folder) as (memory, durable, weed):
        for r in range(rounds):
            for mode, broker in (("memory", memory), ("s3", durable)):
                settings = harness.kafka_settings(broker)
                topic = f"bench.storage.{r}"
                await ensure_topics(settings, [topic], PARTITIONS)
                results[mode]["produce"].append(await produce(settings, topic, n))
                results[mode]["consume"].append(
                    await consume(settings, topic, f"bench-{mode}-{r}", n))
                print(f"round {r + 1}/{rounds} {mode:6}: produce "
                      f"{results[mode]['produce'][-1]:8.0f} msgs/s, consume "
                      f"{results[mode]['consume'][-1]:8.0f} msgs/s", flush=True)
        rss = {"tansu_memory": rss_mb(memory.pid), "tansu_s3": rss_mb(durable.pid),
               "weed": rss_mb(weed.pid)}

    best = {mode: {k: max(v) for k, v in rates.items()} for mode, rates in results.items()}
    print(f"\n{n} messages of {len(value(0))} bytes, {PARTITIONS} partitions, acks=all; "
          f"best of {rounds} round(s)")
    harness.table([("storage", "<16"), ("produce msgs/s", ">15.0f"),
                   ("consume msgs/s", ">15.0f"), ("tansu RSS MB", ">13.0f")],
                  [("memory (base)", best["memory"]["produce"], best["memory"]["consume"],
                    rss["tansu_memory"]),
                   ("s3 (SeaweedFS)", best["s3"]["produce"], best["s3"]["consume"],
                    rss["tansu_s3"], f"+ weed {rss['weed']:.0f} MB")])
    harness.report(
        "broker_storage", "produce_msgs_per_s", round(best["memory"]["produce"], 1),
        round(best["s3"]["produce"], 1),
        round(best["s3"]["produce"] / best["memory"]["produce"], 3), "msgs/s",
        consume_baseline=round(best["memory"]["consume"], 1),
        consume_project=round(best["s3"]["consume"], 1),
        consume_ratio=round(best["s3"]["consume"] / best["memory"]["consume"], 3),
        rss_mb={k: round(v, 1) for k, v in rss.items()}, messages=n, rounds=rounds,
        quick=args.quick)


if __name__ == "__main__":
    asyncio.run(main())
