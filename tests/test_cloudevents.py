"""CloudEvents in both Kafka content modes, with the official CloudEvents Python SDK (its core
bindings and its classic v1 API) and a librdkafka client (confluent-kafka), against the embedded
broker: events the SDK writes in either mode reach a real worker, and what ragstream writes the
SDK reads back without help. The mapping is in docs/schemas.md."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import kafka as ce_classic
from cloudevents.v1.http import CloudEvent as ClassicCloudEvent
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.catalogue import DOCUMENT_UPSERTED, ECHO_RECEIPT
from tests.helpers import eventually, running
from workers.echo import EchoWorker

SDKS = ("core", "classic")
MODES = ("structured", "binary")


def _sdk_message(sdk: str, mode: str, doc_id: str) -> tuple[dict[str, bytes], bytes, bytes]:
    """A documents.v1 upsert as the SDK writes it: (headers, key, value)."""
    attributes = {"id": f"ce-{sdk}-{mode}-{doc_id}", "type": DOCUMENT_UPSERTED,
                  "source": "https://example.com/cms", "subject": doc_id,
                  "datacontenttype": "application/json", "schemaversion": 1,
                  "partitionkey": doc_id}
    data = {"doc_id": doc_id, "version": 1, "text": f"written by the {sdk} SDK in {mode} mode"}
    if sdk == "core":
        event = CloudEvent(attributes, data)
        write = ce_kafka.to_binary if mode == "binary" else ce_kafka.to_structured
        message = write(event, JSONFormat())
    else:  # the classic API wants string extension values in binary mode
        event = ClassicCloudEvent({**attributes, "schemaversion": "1"}, data)
        write = ce_classic.to_binary if mode == "binary" else ce_classic.to_structured
        message = write(event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return dict(message.headers), key, message.value


def _produce(bootstrap: str, topic: str, messages) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False,
                         "acks": "all"})
    errors = []
    for headers, key, value in messages:
        producer.produce(topic, value=value, key=key, headers=list(headers.items()),
                         on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(30) == 0 and not errors, errors


def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> list:
    # every partition assigned from its start, with no group: joining a group through Tansu
    # takes librdkafka about 20 s, which is not what this test measures
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sdk-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                out.append(message)
    finally:
        consumer.close()
    return out


async def test_events_in_both_modes_from_both_sdks_reach_a_worker(settings, topics,
                                                                  redis_client):
    bootstrap = settings.kafka_bootstrap
    cases = [(sdk, mode, f"doc-{sdk}-{mode}-{i}") for sdk in SDKS for mode in MODES
             for i in range(5)]
    await asyncio.to_thread(_produce, bootstrap, "documents.v1",
                            [_sdk_message(*case) for case in cases])
    ledger = f"{settings.group_prefix}:echo:ledger"
    async with running(EchoWorker(), settings):
        async def all_in() -> bool:
            return redis_client.hlen(ledger) == len(cases)
        await eventually(all_in, 60, message=f"{len(cases)} SDK events in the echo ledger")
    applied = {k.decode() for k in redis_client.hkeys(ledger)}
    assert applied == {f"ce-{sdk}-{mode}-{doc}" for sdk, mode, doc in cases}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sdk", SDKS)
async def test_what_ragstream_writes_the_sdk_reads_back(settings, topics, sdk, mode):
    settings = settings.model_copy(update={"cloudevents_mode": mode})
    bootstrap = settings.kafka_bootstrap
    await asyncio.to_thread(_produce, bootstrap, "documents.v1",
                            [_sdk_message("core", "structured", f"d{i}") for i in range(3)])
    async with running(EchoWorker(), settings):
        receipts = await asyncio.to_thread(_consume, bootstrap, "echo.v1", 3)
    assert len(receipts) == 3
    for record in receipts:
        headers = {k: v for k, v in record.headers() or []}
        if sdk == "core":  # it detects the mode from the headers, as the binding says
            message = ce_kafka.KafkaMessage(headers, record.key(), record.value())
            event = ce_kafka.from_kafka(message, JSONFormat())
        else:  # the classic API has no mode detection: the reader picks the one written
            read = ce_classic.from_binary if mode == "binary" else ce_classic.from_structured
            event = read(ce_classic.KafkaMessage(headers, record.key(), record.value()))
        attributes, data = event.get_attributes(), event.get_data()
        assert attributes["type"] == ECHO_RECEIPT and attributes["specversion"] == "1.0"
        assert attributes["source"] == "ragstream/echo"
        assert attributes["subject"] == record.key().decode()
        assert data["source_event_id"] == f"ce-core-structured-{attributes['subject']}"
        if mode == "structured":
            assert headers["content-type"].startswith(b"application/cloudevents+json")
            assert not any(k.startswith("ce_") for k in headers), "no ce_ header in structured"
        else:
            assert headers["content-type"] == b"application/json" and "ce_id" in headers
