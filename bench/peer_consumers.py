"""The consumers bench/peers.py compares, one per process, each reading the whole stream once.

Each consumer decodes and validates every record with ragstream's own ``schemas.catalogue.decode``
(the one pydantic pass the runtime makes) and commits once per batch of ``--batch`` records, so the
runtimes differ only in what they do around that work. It prints one JSON line: the events seen,
the seconds and the process's CPU seconds (all threads, librdkafka's included) from the moment
the first records are in hand to the moment the last one is validated.

    ragstream, raw:      .venv/bin/python bench/peer_consumers.py NAME --bootstrap ... (the
                         project's environment)
    faststream, quix:    bench/.venv-peers/bin/python bench/peer_consumers.py NAME ... (their own
                         environment: quixstreams pins pydantic and confluent-kafka below ours)

Only ``schemas`` is imported from the project here: it needs nothing but pydantic.
``--profile FILE`` writes cProfile stats of the same window (read them with ``pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.catalogue import decode, topic  # noqa: E402

MAX_EVENT_BYTES = 1024 * 1024  # ragstream's default max_event_bytes


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """From the first records in hand to the last event validated: wall and CPU seconds."""

    def __init__(self, events: int, profile: cProfile.Profile | None = None):
        self.events = events
        self.profile = profile
        self.seen = 0
        self.wall = self.cpu = None
        self.done = False

    def begin(self) -> None:
        if self.wall is None:
            self.wall, self.cpu = time.perf_counter(), cpu_s()
            if self.profile is not None:
                self.profile.enable()

    def count(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.events and not self.done:
            self.done = True
            if self.profile is not None:
                self.profile.disable()
            self.wall, self.cpu = time.perf_counter() - self.wall, cpu_s() - self.cpu

    def result(self, runtime: str) -> dict:
        return {"runtime": runtime, "events": self.seen, "seconds": self.wall, "cpu_s": self.cpu}


def validate_all(spec, values) -> int:
    for value in values:
        decode(spec, value, MAX_EVENT_BYTES)
    return len(values)


async def raw(args, window: Window) -> None:
    """A bare aiokafka getmany loop: the least an at-least-once consumer does."""
    import aiokafka

    spec = topic(args.topic)
    consumer = aiokafka.AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not window.done:
            batches = await consumer.getmany(timeout_ms=200, max_records=args.batch)
            if not batches:
                continue
            window.begin()
            for records in batches.values():
                window.count(validate_all(spec, [r.value for r in records]))
            await consumer.commit()
    finally:
        await consumer.stop()


async def ragstream(args, window: Window) -> None:
    """The real WorkerRuntime with a worker that does nothing: decode, validation, metrics,
    dead-letter routing and the commit per batch are the runtime's own."""
    from ragstream.config import Settings
    from ragstream.runner import make_runtime
    from workers.noop import NoopWorker

    class Counting(NoopWorker):
        async def process(self, batch) -> None:
            window.count(len(batch.events))
            if window.done:
                runtime.stop()

    settings = Settings(kafka_bootstrap=args.bootstrap, kafka_idempotence=False,
                        batch_max_records=args.batch, batch_timeout_ms=200,
                        log_level="WARNING")
    runtime = make_runtime(Counting(), settings, group_id=args.group)
    getmany = runtime.consumer.getmany

    async def timed_getmany(*a, **kw):
        records = await getmany(*a, **kw)
        if records:
            window.begin()
        return records

    runtime.consumer.getmany = timed_getmany
    await runtime.run()


async def faststream(args, window: Window) -> None:
    """A FastStream batch subscriber (aiokafka broker) that acks, so commits, after each batch.

    Its decoder hands over the raw values: FastStream would otherwise ``json.loads`` every body
    before our decode parses it again."""
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    spec = topic(args.topic)
    broker = KafkaBroker(args.bootstrap, logger=None)
    finished = asyncio.Event()

    async def raw_values(message, original):
        return [record.value for record in message.raw_message]

    @broker.subscriber(args.topic, group_id=args.group, auto_offset_reset="earliest",
                       batch=True, max_records=args.batch, batch_timeout_ms=200,
                       ack_policy=AckPolicy.ACK, decoder=raw_values)
    async def handle(values: list[bytes]) -> None:
        window.begin()
        window.count(validate_all(spec, values))
        if window.done:
            finished.set()

    async with broker:
        await broker.start()
        await finished.wait()


def quix(args, window: Window) -> None:
    """A Quix Streams application that checkpoints (commits) every ``--batch`` messages.

    Changed from its defaults: ``commit_every`` (0, time only) to the batch; the time trigger
    ``commit_interval`` left at 5 s, so the count decides; raw ``bytes`` values for our decode."""
    from quixstreams import Application

    spec = topic(args.topic)
    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", commit_every=args.batch,
                      use_changelog_topics=False, loglevel="WARNING")
    source = app.topic(args.topic, value_deserializer="bytes")
    sdf = app.dataframe(source)

    def handle(value: bytes) -> None:
        window.begin()
        decode(spec, value, MAX_EVENT_BYTES)
        window.count(1)
        if window.done:
            app.stop()

    sdf.update(handle)
    app.run()


RUNTIMES = {"raw": raw, "ragstream": ragstream, "faststream": faststream, "quix": quix}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runtime", choices=sorted(RUNTIMES))
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--profile", type=Path, help="write cProfile stats of the timed window here")
    args = p.parse_args()
    window = Window(args.events, cProfile.Profile() if args.profile else None)
    run = RUNTIMES[args.runtime]
    if asyncio.iscoroutinefunction(run):
        asyncio.run(run(args, window))
    else:
        run(args, window)
    if args.profile:
        window.profile.dump_stats(args.profile)
    print(json.dumps(window.result(args.runtime)))


if __name__ == "__main__":
    main()
