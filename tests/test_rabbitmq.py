"""What the RabbitMQ transport leaves to the broker itself (RabbitMQ 3.10, quorum queues), with
real worker processes: the delivery limit that dead-letters a message which kills every worker
that takes it, and single active consumer, which keeps the order per key across replicas."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import pytest

from producers.events import document_upserted
from ragstream.config import Settings
from ragstream.publisher import Publisher
from ragstream.stack import ManagedProcess, free_port
from ragstream.supervisor import scrape
from ragstream.transport import ensure_topics
from schemas.catalogue import all_topic_names
from tests.helpers import Tap, delete_rabbitmq_namespace, eventually, start_worker
from tests.poison_worker import POISON

pytestmark = pytest.mark.slow


@pytest.fixture
def rabbit_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` on RabbitMQ, with this test's own namespace (removed afterwards)."""
    prefix = env["RAGSTREAM_GROUP_PREFIX"]
    yield {**env, "RAGSTREAM_TRANSPORT": "rabbitmq", "RAGSTREAM_RABBITMQ_NAMESPACE": prefix}
    delete_rabbitmq_namespace(Settings(), prefix + ".")


def _effects(redis_client, settings: Settings) -> tuple[int, int]:
    """(events applied once, entries in the echo ledger)."""
    prefix = f"{settings.group_prefix}:echo"
    return int(redis_client.get(f"{prefix}:effects") or 0), redis_client.hlen(f"{prefix}:ledger")


async def test_a_message_that_kills_every_worker_is_dead_lettered_at_the_delivery_limit(
        rabbit_env, redis_client, tmp_path):
    limit = 2
    env = {**rabbit_env, "RAGSTREAM_RABBITMQ_DELIVERY_LIMIT": str(limit),
           # one message in flight (prefetch = batch size): the poison takes no batch mates down
           "RAGSTREAM_BATCH_MAX_RECORDS": "1"}
    settings = Settings.from_env(env)
    await ensure_topics(settings, all_topic_names(), 1,
                        {settings.group_id("echo"): ("documents.v1",)})
    dlq = Tap(settings, "documents.v1.dlq")
    good = [document_upserted(f"good-{i}", f"text {i}", version=1) for i in range(10)]
    poison = document_upserted(POISON, "this one kills its worker", version=1)
    async with Publisher(settings) as pub:
        await pub.publish(good[:5] + [poison] + good[5:])

    deaths, started = 0, 0
    deadline = time.monotonic() + 120
    while _effects(redis_client, settings)[0] < len(good):
        assert time.monotonic() < deadline, f"{deaths} deaths, {_effects(redis_client, settings)}"
        worker = ManagedProcess("poison-worker", [sys.executable, "-m", "tests.poison_worker"],
                                tmp_path / f"poison-worker-{started}.log", env=env)
        worker.start()
        started += 1
        while worker.alive() and _effects(redis_client, settings)[0] < len(good):
            assert time.monotonic() < deadline, worker.tail()
            await asyncio.sleep(0.1)
        if worker.alive():
            worker.stop()
        else:
            assert worker.process.returncode == 3, worker.tail()  # the poison, nothing else
            deaths += 1

    # RabbitMQ counts the returns of a message: it is delivered once, then again after each of
    # `limit` returns; the return after that goes to the dead-letter exchange instead
    assert deaths == limit + 1
    assert _effects(redis_client, settings) == (len(good), len(good))  # each good one once
    [letter] = await dlq.read(timeout=1.0)
    assert json.loads(letter.value)["id"] == poison.id
    headers = dict(letter.headers)
    assert headers["x-error-reason"] == b"delivery_limit"  # what tail and dlq replay filter on
    assert headers["x-original-topic"] == b"documents.v1"
    assert "x-death" in headers


async def test_single_active_consumer_keeps_each_key_in_order_across_a_killed_replica(
        rabbit_env, redis_client, tmp_path):
    env = {**rabbit_env, "RAGSTREAM_RABBITMQ_SINGLE_ACTIVE_CONSUMER": "true",
           "RAGSTREAM_BATCH_MAX_RECORDS": "50"}
    settings = Settings.from_env(env)
    await ensure_topics(settings, all_topic_names(), 1,
                        {settings.group_id("echo"): ("documents.v1",)})
    receipts = Tap(settings, "echo.v1")
    keys, versions = 20, 100
    events = [document_upserted(f"key-{k}", f"version {v}", version=v)
              for v in range(1, versions + 1) for k in range(keys)]
    version_of = {e.id: (e.subject, e.data["version"]) for e in events}
    ports = [free_port(), free_port()]
    workers = [start_worker("echo", {**env, "RAGSTREAM_METRICS_PORT": str(p)}, tmp_path,
                            tag=f"-sac{i}") for i, p in enumerate(ports)]

    def consumed(port: int) -> float:
        return scrape(port).get("ragstream_events_consumed_total", 0)

    async def produce() -> None:
        async with Publisher(settings) as pub:
            for start in range(0, len(events), 100):
                await pub.publish(events[start:start + 100])
                await asyncio.sleep(0.1)

    producer = None
    try:
        async def both_ready() -> bool:
            try:
                return all(scrape(p).get("ragstream_partitions_assigned") == 1 for p in ports)
            except OSError:
                return False
        await eventually(both_ready, 60, message="both replicas consuming the queue")
        producer = asyncio.create_task(produce())
        await eventually(lambda: _at_least(redis_client, settings, 500), 60, interval=0.05,
                         message="progress before the kill")
        counts = [consumed(p) for p in ports]
        assert sorted(counts)[0] == 0 and sorted(counts)[1] > 0, \
            f"one replica consumes, the other waits: {counts}"
        active = counts.index(max(counts))
        workers[active].signal(signal.SIGKILL)
        workers[active].process.wait(10)
        assert _effects(redis_client, settings)[0] < len(events), "the run ended before the kill"
        await producer
        await eventually(lambda: _at_least(redis_client, settings, len(events)), 90,
                         message="the standby takes over and finishes")
        assert consumed(ports[1 - active]) > 0
    finally:
        if producer is not None:
            producer.cancel()
        for w in workers:
            w.stop()

    assert _effects(redis_client, settings) == (len(events), len(events))
    # each key's versions in the order they were published: the killed replica's unacked
    # deliveries went back to the queue's head, to the standby, before anything after them
    seen: dict[str, list[int]] = {}
    first: set[str] = set()
    for record in await receipts.read():
        source = json.loads(record.value)["data"]["source_event_id"]
        if source not in first:  # a redelivered event's receipt comes again; keep the first
            first.add(source)
            key, version = version_of[source]
            seen.setdefault(key, []).append(version)
    assert seen == {f"key-{k}": list(range(1, versions + 1)) for k in range(keys)}


async def _at_least(redis_client, settings: Settings, n: int) -> bool:
    return _effects(redis_client, settings)[0] >= n
