"""End to end over real Tansu and FalkorDB: the echo worker consumes, writes, publishes."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from producers.events import document_upserted
from ragstream.publisher import Publisher
from tests.helpers import Tap, eventually, running
from workers.echo import EchoWorker


async def test_echo_worker_consumes_writes_and_publishes(transport_settings, transport_topics,
                                                         redis_client):
    settings = transport_settings
    receipts_tap = Tap(settings, "echo.v1")
    envelopes = [document_upserted(f"doc-{i}", f"text {i}", version=1) for i in range(100)]
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)

    prefix = f"{settings.group_prefix}:echo"
    async with running(EchoWorker(), settings) as runtime:
        async def all_applied() -> bool:
            return int(redis_client.get(f"{prefix}:effects") or 0) == 100
        await eventually(all_applied, 30, message="100 ledger effects")

        async def caught_up() -> bool:
            text = runtime.metrics.render().decode()
            lags = [line for line in text.splitlines() if line.startswith("ragstream_consumer_lag{")]
            partitions = 4 if settings.transport == "kafka" else 1  # a queue is one partition
            return len(lags) == partitions and all(line.endswith(" 0.0") for line in lags)
        await eventually(caught_up, 10, message="a lag series per partition, all at 0")
        metrics = runtime.metrics.render().decode()
        base = f"http://127.0.0.1:{runtime.health.port}"
        # the health server shares this event loop: call it from a thread
        assert await asyncio.to_thread(_get, base + "/healthz") == (200, b"ok\n")
        assert await asyncio.to_thread(_get, base + "/readyz") == (200, b"ok\n")
        status, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and b"ragstream_event_freshness_seconds_bucket" in body

    receipts = await receipts_tap.read()
    sources = {json.loads(r.value)["data"]["source_event_id"] for r in receipts}
    assert sources == {e.id for e in envelopes}
    # receipts are keyed by the source subject, so they land with their document's partition key
    assert {r.key.decode() for r in receipts} == {f"doc-{i}" for i in range(100)}
    assert redis_client.hlen(f"{prefix}:ledger") == 100
    assert 'ragstream_events_processed_total{topic="documents.v1",worker="echo"} 100.0' in metrics


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_a_downstream_subscriber_gets_typed_events_on_both_transports(
        transport_settings, transport_topics):
    from consumers.subscribe import subscribe
    from schemas.payloads import DocumentUpserted

    settings = transport_settings
    group = f"{settings.group_prefix}.svc"  # inside the test's namespace, so cleanup finds it
    if settings.transport == "rabbitmq":  # RabbitMQ keeps events only for existing queues
        from ragstream.transport import ensure_topics
        from schemas.catalogue import all_topic_names

        await ensure_topics(settings, all_topic_names(), 1, {group: ("documents.v1",)})
    envelopes = [document_upserted(f"doc-{i}", f"text {i}", version=i) for i in range(5)]
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)
    seen = []
    stream = subscribe(settings, "documents.v1", group=group, from_beginning=True)
    async with asyncio.timeout(30):
        async for envelope, _ in stream:
            assert isinstance(envelope.data, DocumentUpserted)
            seen.append(envelope.id)
            if len(seen) == 5:
                break
    await stream.aclose()
    assert sorted(seen) == sorted(e.id for e in envelopes)


async def test_a_worker_whose_rabbitmq_queue_vanishes_fails_loudly(env, topics, redis_client):
    """A dead connection must stop the worker (its supervisor restarts it), never hang it."""
    import kombu

    from ragstream.config import Settings
    from tests.helpers import delete_rabbitmq_namespace

    prefix = env["RAGSTREAM_GROUP_PREFIX"]
    settings = Settings(transport="rabbitmq", rabbitmq_namespace=prefix, group_prefix=prefix,
                        redis_url=env["RAGSTREAM_REDIS_URL"], batch_timeout_ms=50)
    from ragstream.runner import make_runtime

    runtime = make_runtime(EchoWorker(), settings)
    task = asyncio.create_task(runtime.run())
    try:
        await eventually(lambda: _is_ready(runtime), 30, message="worker ready")
        with kombu.Connection(settings.rabbitmq_url.get_secret_value()) as conn:
            conn.default_channel.queue_delete(f"{prefix}.echo.documents.v1")
        with pytest.raises(ConnectionError, match="RabbitMQ connection lost"):
            await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        delete_rabbitmq_namespace(settings, prefix + ".")


async def _is_ready(runtime) -> bool:
    return runtime._ready


class OutageThenUp(EchoWorker):
    """Its store is down for the first ``outages`` batches (backpressure), then up."""

    def __init__(self, outages: int):
        self.outages = outages

    async def process(self, batch) -> None:
        from ragstream.errors import SinkUnavailable

        if self.outages > 0:
            self.outages -= 1
            raise SinkUnavailable("store down", retry_after=0.05)
        await super().process(batch)


async def test_a_long_store_outage_on_rabbitmq_rewinds_without_spending_the_delivery_limit(
        transport_env, redis_client):
    """Backpressure rewinds a batch many times. On RabbitMQ those rewinds used to hand the
    messages back to the broker, and a quorum queue counts each as a failed delivery: past the
    delivery limit the broker dead-lettered the batch in flight, with no reason a replay knew."""
    from ragstream.config import Settings
    from ragstream.transport import ensure_topics
    from schemas.catalogue import all_topic_names

    settings = Settings.from_env({**transport_env, "RAGSTREAM_RABBITMQ_DELIVERY_LIMIT": "2"})
    await ensure_topics(settings, all_topic_names(), 4,
                        {settings.group_id("echo"): ("documents.v1",)})
    dlq_tap = Tap(settings, "documents.v1.dlq")
    envelopes = [document_upserted(f"doc-{i}", f"text {i}", version=1) for i in range(20)]
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)
    worker = OutageThenUp(outages=8)  # four times the delivery limit
    async with running(worker, settings):
        async def all_applied() -> bool:
            return int(redis_client.get(f"{settings.group_prefix}:echo:effects") or 0) == 20
        await eventually(all_applied, 60, message="20 ledger effects after the outage")
    assert worker.outages == 0
    assert await dlq_tap.read(timeout=1.0) == []
