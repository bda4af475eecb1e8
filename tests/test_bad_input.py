"""Hostile input over real Kafka: every malformed event lands in the DLQ with a reason, every
valid one is processed, and the worker never stops. Then a dead letter is replayed after a fix."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from producers.dlq import replay
from producers.events import document_upserted
from ragstream.publisher import Publisher, encode
from ragstream.config import Settings
from ragstream.runtime import Batch, PermanentError
from ragstream.stack import Tansu
from ragstream.transport.base import OutMessage
from ragstream.transport import ensure_topics
from schemas.catalogue import all_topic_names
from tests.helpers import Tap, delete_rabbitmq_namespace, eventually, read_topic, running
from workers.echo import EchoWorker

MAX_BYTES = 4096
HOSTILE = ["x'}) DETACH DELETE n //", "`; MATCH (n) DETACH DELETE n", "$(rm -rf /)", "\u202e",
           "\ud7ff\ue000", "Robert'); DROP TABLE documents;--", "{{7*7}}", "\t\r\n"]


def valid_envelope(text: str):
    return document_upserted(f"doc-{uuid.uuid4().hex}", text, version=1)


# the dead-letter reason each corruption must get: exact, not merely present
REASONS = {"random_bytes": "invalid_utf8", "truncated": "invalid_json",
           "not_an_object": "invalid_envelope", "missing_field": "invalid_envelope",
           "wrong_type": "invalid_payload", "unknown_version": "unsupported_version",
           "unknown_type": "unknown_type", "nul_in_key": "invalid_envelope",
           "nul_in_text": "invalid_payload", "oversized": "oversized",
           "deep_nesting": "invalid_json"}


def corrupt(kind: str, blob: bytes, text: str) -> bytes:
    good = json.loads(encode(valid_envelope("ok")).value)
    return {
        "random_bytes": b"\xff" + blob,  # 0xff never starts valid UTF-8
        "truncated": json.dumps(good).encode()[: max(len(blob) % 200, 1)],
        "not_an_object": json.dumps([text]).encode(),
        "missing_field": json.dumps({k: v for k, v in good.items() if k != "subject"}).encode(),
        "wrong_type": json.dumps(good | {"data": good["data"] | {"version": text + "x"}}).encode(),
        "unknown_version": json.dumps(good | {"schemaversion": 7}).encode(),
        "unknown_type": json.dumps(good | {"type": "ragstream.document.exploded"}).encode(),
        "nul_in_key": json.dumps(good | {"subject": "a\u0000b"}).encode(),
        "nul_in_text": json.dumps(good | {"data": good["data"] | {"text": text + "\u0000"}}).encode(),
        "oversized": json.dumps(good | {"data": good["data"] | {"text": "y" * MAX_BYTES}}).encode(),
        "deep_nesting": b'{"data":' * 5000 + b"{}" + b"}" * 5000,
    }[kind]


stream_items = st.one_of(
    # any text the documents.v1 contract takes: no NUL (see nul_in_text) and no lone
    # surrogate, which is not text in any encoding (the gateway refuses it with a 422)
    st.builds(lambda t: ("valid", t),
              st.one_of(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                max_size=200),
                        st.sampled_from(HOSTILE))),
    st.builds(lambda k, b, t: ("invalid", k, b, t),
              st.sampled_from(["random_bytes", "truncated", "not_an_object", "missing_field",
                               "wrong_type", "unknown_version", "unknown_type", "nul_in_key",
                               "nul_in_text", "oversized", "deep_nesting"]),
              st.binary(max_size=300), st.text(max_size=50)),
)


@pytest.mark.parametrize("transport", ["kafka", "rabbitmq"])
@hsettings(max_examples=4, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(stream_items, min_size=20, max_size=120))
async def test_malformed_events_go_to_the_dlq_and_valid_ones_are_processed(
        transport, stream, falkordb, redis_client, tmp_path):
    broker = Tansu(tmp_path)  # a fresh broker per example: no topic leaks between examples
    broker.start()
    prefix = f"h{uuid.uuid4().hex[:8]}"  # and fresh RabbitMQ names
    settings = Settings(transport=transport, kafka_bootstrap=broker.bootstrap,
                        kafka_idempotence=False, redis_url=falkordb.url, group_prefix=prefix,
                        rabbitmq_namespace=prefix, max_event_bytes=MAX_BYTES, batch_timeout_ms=50)
    try:
        await ensure_topics(settings, all_topic_names(), 3,
                            {settings.group_id("echo"): ("documents.v1",)})
        dlq_tap = Tap(settings, "documents.v1.dlq")
        messages, valid_ids, invalid = [], set(), []
        for item in stream:
            if item[0] == "valid":
                envelope = valid_envelope(item[1])
                valid_ids.add(envelope.id)
                messages.append(encode(envelope))
            else:
                value = corrupt(*item[1:])
                # the size limit is checked before anything else (deep_nesting is over it)
                invalid.append((value, "oversized" if len(value) > MAX_BYTES
                                else REASONS[item[1]]))
                messages.append(OutMessage("documents.v1", None, value))
        async with Publisher(settings) as pub:
            await pub.send_raw(messages)

        ledger = f"{settings.group_prefix}:echo"
        async with running(EchoWorker(), settings):
            async def done() -> bool:
                return int(redis_client.get(f"{ledger}:effects") or 0) == len(valid_ids)
            await eventually(done, 60, message="all valid events processed")
            dead: list = []

            async def all_dead() -> bool:
                dead[:] = await dlq_tap.read(timeout=0.5)
                return len(dead) >= len(invalid)
            await eventually(all_dead, 60, message=f"{len(invalid)} dead letters")
        assert set(redis_client.hkeys(f"{ledger}:ledger")) == {i.encode() for i in valid_ids}
        # each corruption, by its bytes (kept unchanged), got exactly its reason
        got = Counter((bytes(r.value), dict(r.headers)["x-error-reason"].decode()) for r in dead)
        assert got == Counter(invalid)
        originals = ({(r.partition, r.offset): r.value
                      for r in await read_topic(settings, "documents.v1")}
                     if transport == "kafka" else None)  # a queue has no offsets to point at
        for record in dead:
            headers = dict(record.headers)
            assert headers["x-error-message"] and headers["x-stage"] == b"decode"
            assert headers["x-original-topic"] == b"documents.v1"
            if originals is not None:
                where = (int(headers["x-original-partition"]), int(headers["x-original-offset"]))
                assert originals[where] == record.value
    finally:
        broker.process.kill()
        broker.process.wait()
        if transport == "rabbitmq":
            delete_rabbitmq_namespace(settings, prefix + ".")


class FlakyUntilFixed(EchoWorker):
    """Fails permanently on documents whose text says so, until the flag in Redis says fixed."""

    name = "echo"

    async def process(self, batch: Batch) -> None:
        fixed = await self._redis.get(f"{self.sinks['ledger'].keys[0]}:fixed")
        for event in batch.events:
            if event.payload.text == "needs a fix" and not fixed:
                raise PermanentError("bug in the worker")
        await super().process(batch)


async def test_dlq_replay_republishes_after_a_fix(transport_settings, transport_topics,
                                                 redis_client):
    settings = transport_settings
    events = [document_upserted(f"d{i}", "needs a fix" if i == 3 else "fine", version=1)
              for i in range(6)]
    async with Publisher(settings) as pub:
        await pub.publish(events)
    prefix = f"{settings.group_prefix}:echo"
    effects = lambda: int(redis_client.get(f"{prefix}:effects") or 0)  # noqa: E731
    async with running(FlakyUntilFixed(), settings):
        async def five() -> bool:
            return effects() == 5
        await eventually(five, 30, message="five processed")
        await eventually(lambda: _has_dead_letter(settings), 30, message="one dead letter")
        redis_client.set(f"{prefix}:ledger:fixed", "1")  # the fix is deployed
        replayed, passed = await replay(settings, "documents.v1.dlq")
        assert (replayed, passed) == (1, 0)

        async def six() -> bool:
            return effects() == 6
        await eventually(six, 30, message="the replayed event is processed")
    assert redis_client.hexists(f"{prefix}:ledger", events[3].id)
    # the replay cursor is durable: a second replay finds nothing new
    assert await replay(settings, "documents.v1.dlq", idle_ms=500) == (0, 0)


async def _has_dead_letter(settings) -> bool:
    if settings.transport == "rabbitmq":  # dead letters wait in their queue
        import kombu

        from ragstream.transport.rabbitmq import dead_letter_queue

        with kombu.Connection(settings.rabbitmq_url.get_secret_value()) as conn:
            queue = dead_letter_queue(settings, "documents.v1").bind(conn.default_channel)
            return queue.queue_declare(passive=True)[1] == 1
    return len(await read_topic(settings, "documents.v1.dlq", timeout=0.5)) == 1
