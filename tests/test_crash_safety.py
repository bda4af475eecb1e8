"""Worker processes on real Tansu and FalkorDB: killed, split across a group, and drained.

The echo worker's ledger counts first-time effects apart from deliveries, so a replay shows up
as deliveries > effects while effects must equal the events published, exactly.
"""

from __future__ import annotations

import asyncio
import json
import signal

import aiokafka
import pytest

from producers.events import document_upserted
from ragstream.publisher import Publisher
from ragstream.supervisor import scrape
from ragstream.stack import free_port
from ragstream.transport.kafka import connection_options
from tests.helpers import Tap, eventually, start_worker

pytestmark = pytest.mark.slow


def ledger(redis_client, settings) -> tuple[int, int, int]:
    prefix = f"{settings.group_prefix}:echo"
    return (int(redis_client.get(f"{prefix}:effects") or 0),
            int(redis_client.get(f"{prefix}:deliveries") or 0),
            redis_client.hlen(f"{prefix}:ledger"))


async def committed_total(settings, topic: str = "documents.v1") -> int:
    consumer = aiokafka.AIOKafkaConsumer(**connection_options(settings),
                                         group_id=settings.group_id("echo"),
                                         enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in partitions:
            total += await consumer.committed(aiokafka.TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def documents(n: int, prefix: str = "doc"):
    return [document_upserted(f"{prefix}-{i}", f"text of {i}", version=1) for i in range(n)]


async def test_sigkill_five_times_mid_run_loses_nothing_and_duplicates_no_effect(
        transport_env, transport_settings, transport_topics, redis_client, tmp_path):
    total = 5000
    env = {**transport_env, "RAGSTREAM_BATCH_MAX_RECORDS": "50"}
    settings = transport_settings
    receipts_tap = Tap(settings, "echo.v1")
    events = documents(total)

    async def produce() -> None:
        async with Publisher(settings) as pub:
            for start in range(0, total, 250):
                await pub.publish(events[start:start + 250])
                await asyncio.sleep(0.25)

    producer = asyncio.create_task(produce())
    kills = 0
    worker = start_worker("echo", env, tmp_path, tag="-0")
    try:
        while kills < 5:
            before = ledger(redis_client, settings)[0]
            await eventually(lambda: _grew(redis_client, settings, before, 150), 60,
                             interval=0.05, message="progress before the kill")
            assert ledger(redis_client, settings)[0] < total, "the run ended before 5 kills"
            worker.signal(signal.SIGKILL)
            worker.process.wait(10)
            kills += 1
            worker = start_worker("echo", env, tmp_path, tag=f"-{kills}")
        await producer
        await eventually(lambda: _effects_at_least(redis_client, settings, total), 180,
                         message=f"{total} effects after {kills} kills")
    finally:
        producer.cancel()
        worker.stop()

    effects, deliveries, distinct = ledger(redis_client, settings)
    print(f"kills={kills} effects={effects} deliveries={deliveries} replayed={deliveries - effects}")
    assert kills == 5
    assert effects == distinct == total  # nothing lost, no duplicate effect
    receipts = await receipts_tap.read()
    receipt_ids = [json.loads(r.value)["id"] for r in receipts]
    sources = {json.loads(r.value)["data"]["source_event_id"] for r in receipts}
    assert sources == {e.id for e in events}  # every event has its receipt
    # a replayed event re-emits its receipt with the same id, so consumers can drop it
    assert len(set(receipt_ids)) == total


async def _grew(redis_client, settings, before: int, by: int) -> bool:
    return ledger(redis_client, settings)[0] >= before + by


async def _effects_at_least(redis_client, settings, n: int) -> bool:
    return ledger(redis_client, settings)[0] >= n


async def test_two_workers_split_the_partitions_and_one_finishes_when_the_other_leaves(
        env, settings, topics, redis_client, tmp_path):
    ports = [free_port(), free_port()]
    workers = [start_worker("echo", {**env, "RAGSTREAM_METRICS_PORT": str(p)}, tmp_path, tag=f"-{i}")
               for i, p in enumerate(ports)]
    try:
        async def split() -> bool:
            try:
                assigned = [scrape(p).get("ragstream_partitions_assigned", 0) for p in ports]
            except OSError:
                return False
            return assigned == [2, 2]
        await eventually(split, 60, message="4 partitions split 2 and 2")

        first = documents(2000, "a")
        async with Publisher(settings) as pub:
            await pub.publish(first)
        await eventually(lambda: _effects_at_least(redis_client, settings, 2000), 60,
                         message="first 2000 effects")
        processed = [scrape(p).get("ragstream_events_processed_total", 0) for p in ports]
        assert all(n > 0 for n in processed), f"both workers took a share: {processed}"

        assert workers[0].stop(30) == 0  # SIGTERM: drain, commit, leave the group
        second = documents(2000, "b")
        async with Publisher(settings) as pub:
            await pub.publish(second)
        await eventually(lambda: _effects_at_least(redis_client, settings, 4000), 90,
                         message="the remaining worker finishes all 4000")
        assert scrape(ports[1]).get("ragstream_partitions_assigned") == 4
    finally:
        for w in workers:
            w.stop()
    effects, deliveries, distinct = ledger(redis_client, settings)
    assert effects == distinct == 4000
    # the graceful leave committed everything first: nothing was delivered twice
    assert deliveries == 4000


async def test_a_sigkilled_worker_s_partitions_move_to_the_other_with_no_loss_or_double_effect(
        env, settings, topics, redis_client, tmp_path):
    """Two workers share the group; one is SIGKILLed mid-run, so it neither commits nor leaves:
    the group evicts it after the session timeout and the survivor takes its partitions, replays
    from their last commits, and applies each event's effect exactly once."""
    total = 4000
    env = {**env, "RAGSTREAM_BATCH_MAX_RECORDS": "50"}
    ports = [free_port(), free_port()]
    workers = [start_worker("echo", {**env, "RAGSTREAM_METRICS_PORT": str(p)}, tmp_path,
                            tag=f"-{i}") for i, p in enumerate(ports)]
    receipts_tap = Tap(settings, "echo.v1")
    events = documents(total, "k")

    async def produce() -> None:  # on until after the kill, onto every partition
        async with Publisher(settings) as pub:
            for start in range(0, total, 200):
                await pub.publish(events[start:start + 200])
                await asyncio.sleep(0.2)

    producer = None
    try:
        async def split() -> bool:
            try:
                return [scrape(p).get("ragstream_partitions_assigned", 0) for p in ports] == [2, 2]
            except OSError:
                return False
        await eventually(split, 60, message="4 partitions split 2 and 2")
        producer = asyncio.create_task(produce())
        await eventually(lambda: _effects_at_least(redis_client, settings, 1000), 60,
                         interval=0.05, message="progress before the kill")
        processed = [scrape(p).get("ragstream_events_processed_total", 0) for p in ports]
        assert all(n > 0 for n in processed), f"both workers took a share: {processed}"
        workers[0].signal(signal.SIGKILL)
        workers[0].process.wait(10)
        assert ledger(redis_client, settings)[0] < total, "the run ended before the kill"

        await producer
        await eventually(lambda: _effects_at_least(redis_client, settings, total), 120,
                         message=f"the survivor finishes all {total}")
        assert scrape(ports[1]).get("ragstream_partitions_assigned") == 4
    finally:
        if producer is not None:
            producer.cancel()
        for w in workers:
            w.stop()

    effects, deliveries, distinct = ledger(redis_client, settings)
    print(f"effects={effects} deliveries={deliveries} replayed={deliveries - effects}")
    assert effects == distinct == total  # nothing lost, no duplicate effect
    receipts = await receipts_tap.read()
    assert {json.loads(r.value)["data"]["source_event_id"] for r in receipts} == \
        {e.id for e in events}


async def test_sigterm_drains_the_batch_in_flight_and_commits(
        transport_env, transport_settings, transport_topics, redis_client, tmp_path):
    env = {**transport_env, "RAGSTREAM_BATCH_MAX_RECORDS": "20"}
    settings = transport_settings
    async with Publisher(settings) as pub:
        await pub.publish(documents(6000))
    worker = start_worker("echo", env, tmp_path, tag="-a")
    try:
        await eventually(lambda: _effects_at_least(redis_client, settings, 300), 60,
                         interval=0.05, message="some progress")
        assert worker.stop(30) == 0
        effects, deliveries, _ = ledger(redis_client, settings)
        assert effects < 6000, "stopped too late to test a drain"
        assert deliveries == effects  # nothing was processed twice
        if settings.transport == "kafka":
            assert await committed_total(settings) == effects  # and all of it was committed
    finally:
        worker.stop()
    worker = start_worker("echo", env, tmp_path, tag="-b")
    try:
        await eventually(lambda: _effects_at_least(redis_client, settings, 6000), 90,
                         message="the restarted worker finishes")
    finally:
        worker.stop()
    effects, deliveries, distinct = ledger(redis_client, settings)
    assert effects == deliveries == distinct == 6000
