"""The embedded Kafka is durable: Tansu on S3 (a local SeaweedFS) is SIGKILLed in the middle of
a run and restarted on the same port. Nothing acknowledged is lost, the consumer group resumes
from its committed offsets (it does not start over), and the store ends as a clean run's."""

from __future__ import annotations

import asyncio
import json
import uuid

from producers.events import document_upserted
from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.stack import SeaweedFS, Tansu
from ragstream.transport.kafka import ensure_topics
from schemas.catalogue import all_topic_names
from tests.helpers import eventually, read_topic, running
from workers.echo import EchoWorker

DOCS = 1_500
BATCH = 50


async def test_a_killed_durable_broker_loses_nothing_acknowledged(tmp_path, falkordb,
                                                                   redis_client):
    seaweed = SeaweedFS(tmp_path)
    seaweed.start()
    tansu = Tansu(tmp_path, s3=seaweed)
    tansu.start()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env({
        "RAGSTREAM_KAFKA_BOOTSTRAP": tansu.bootstrap, "RAGSTREAM_KAFKA_IDEMPOTENCE": "false",
        "RAGSTREAM_REDIS_URL": falkordb.url, "RAGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "RAGSTREAM_GROUP_PREFIX": prefix, "RAGSTREAM_SESSION_TIMEOUT_MS": "6000",
        "RAGSTREAM_HEARTBEAT_INTERVAL_MS": "500", "RAGSTREAM_BATCH_TIMEOUT_MS": "100",
        "RAGSTREAM_RETRY_BACKOFF_S": "0.05", "RAGSTREAM_MAX_BACKOFF_S": "1"})
    effects = f"{prefix}:echo:effects"
    try:
        await ensure_topics(settings, all_topic_names(), 4)
        envelopes = [document_upserted(f"doc-{i}", f"text {i}", version=1) for i in range(DOCS)]
        acked: set[str] = set()

        async def publish_all() -> None:
            # a batch counts once the broker acknowledged all of it; one cut short by the kill
            # is sent again (the same event ids: the ledger keeps one effect each)
            async with Publisher(settings) as pub:
                for start in range(0, DOCS, BATCH):
                    part = envelopes[start:start + BATCH]
                    while True:
                        try:
                            await asyncio.wait_for(pub.publish(part), 20)
                            break
                        except Exception:  # noqa: BLE001  the broker is down: retry
                            await asyncio.sleep(0.5)
                    acked.update(e.id for e in part)
                    await asyncio.sleep(0.02)

        async with running(EchoWorker(), settings):
            publisher = asyncio.create_task(publish_all())

            async def halfway() -> bool:
                return int(redis_client.get(effects) or 0) >= DOCS // 3
            await eventually(halfway, 120, message="a third of the documents echoed")
            tansu.process.kill()
            tansu.process.wait()
            killed_at = int(redis_client.get(effects) or 0)
            await asyncio.sleep(2)
            tansu = Tansu(tmp_path, port=tansu.port, s3=seaweed)
            tansu.start()
            await asyncio.wait_for(publisher, 300)

            async def all_echoed() -> bool:
                return int(redis_client.get(effects) or 0) == DOCS
            await eventually(all_echoed, 180, message=f"{DOCS} documents echoed")

        ledger = {k.decode() for k in redis_client.hkeys(f"{prefix}:echo:ledger")}
        assert len(acked) == DOCS and ledger == acked  # nothing acknowledged was lost
        assert killed_at < DOCS, "the kill came too late to test anything"
        # the group resumed from its committed offsets: a group that had lost them would have
        # read every partition from the start again, delivering the first third twice
        deliveries = int(redis_client.get(f"{prefix}:echo:deliveries"))
        assert deliveries - DOCS < killed_at, (deliveries, killed_at)
        # and the topic itself kept every acknowledged event
        held = {json.loads(r.value)["id"] for r in await read_topic(settings, "documents.v1")}
        assert acked <= held
    finally:
        tansu.stop()
        seaweed.stop()
