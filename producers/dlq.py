"""Dead letters: read them (``describe``), and replay them to their original topic, bytes
unchanged."""

from __future__ import annotations

import asyncio

import aiokafka
import kombu
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.transport.base import OutMessage, Record
from ragstream.transport.kafka import connection_options
from schemas.catalogue import DLQ_SUFFIX


def describe(record: Record, preview_bytes: int = 4096) -> dict:
    """A dead letter as JSON: where it failed and why (its ``x-`` headers), and the head of its
    bytes. They need not be UTF-8 or JSON: invalid bytes show as ``\\xNN``."""
    return {"partition": record.partition, "offset": record.offset,
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers
                        if k.startswith("x-")},
            "bytes": len(record.value), "cut": len(record.value) > preview_bytes,
            "value": record.value[:preview_bytes].decode("utf-8", "backslashreplace")}


async def replay(settings: Settings, dlq_topic: str, *, reason: str | None = None,
                 limit: int = 0, idle_ms: int = 2000) -> tuple[int, int]:
    """Replay what the DLQ holds now, then stop. Returns (replayed, passed over).

    A consumer group per topic and reason filter remembers how far replay got, so running it
    again replays only newer dead letters. Dead letters a filter passes over stay available to
    other filters. Nothing past ``limit`` is committed."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{dlq_topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX})")
    if settings.transport == "rabbitmq":
        return await asyncio.to_thread(_replay_rabbitmq, settings, dlq_topic, reason, limit)
    group = settings.group_id(f"dlq-replay.{dlq_topic}.{reason or 'all'}")
    consumer = aiokafka.AIOKafkaConsumer(
        dlq_topic, **connection_options(settings), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    replayed = passed = 0
    await consumer.start()
    try:
        async with Publisher(settings) as pub:
            while not limit or replayed < limit:
                batches = await consumer.getmany(timeout_ms=idle_ms, max_records=500)
                if not batches:
                    break
                out, handled = [], {}
                for tp, msgs in batches.items():
                    for m in msgs:
                        if limit and replayed + len(out) >= limit:
                            break
                        handled[tp] = m.offset + 1
                        headers = dict(m.headers or ())
                        if reason and headers.get("x-error-reason", b"").decode() != reason:
                            passed += 1
                            continue
                        out.append(OutMessage(headers["x-original-topic"].decode(), m.key,
                                              m.value, _replayed(headers)))
                await pub.send_raw(out)
                await consumer.commit({TopicPartition(tp.topic, tp.partition):
                                       OffsetAndMetadata(off, "") for tp, off in handled.items()})
                replayed += len(out)
    finally:
        await consumer.stop()
    return replayed, passed


def _replayed(headers: dict, drop: str = "") -> list[tuple[str, bytes]]:
    """The original headers without the dead-letter ones, counting this replay."""
    count = int(headers.get("x-replay-count", 0)) + 1
    kept = [(k, v.encode("latin-1") if isinstance(v, str) else v) for k, v in headers.items()
            if not k.startswith("x-") and k != drop]
    return kept + [("x-replay-count", str(count).encode())]


def _replay_rabbitmq(settings: Settings, dlq_topic: str, reason: str | None,
                     limit: int) -> tuple[int, int]:
    """RabbitMQ keeps dead letters in a queue: take what it holds now, once each. Replayed ones go
    back to their topic; ones the reason filter passes over go to the back of the queue."""
    from ragstream.transport.rabbitmq import KEY_HEADER, _exchange, dead_letter_queue

    replayed = passed = 0
    with kombu.Connection(settings.rabbitmq_url.get_secret_value(),
                          transport_options={"confirm_publish": True}) as conn:
        channel = conn.default_channel
        queue = dead_letter_queue(settings, dlq_topic).bind(channel)
        _, waiting, _ = queue.queue_declare(passive=True)
        producer = kombu.Producer(channel)
        for _ in range(waiting):
            if limit and replayed >= limit:
                break
            message = queue.get(no_ack=False, accept=None)
            if message is None:
                break
            headers = dict(message.headers or {})
            error_reason = headers.get("x-error-reason", "")
            error_reason = error_reason.decode() if isinstance(error_reason, bytes) else error_reason
            if reason and error_reason != reason:
                target, routing_headers = dlq_topic, headers  # unchanged, to the back
                passed += 1
            else:
                original = headers.get("x-original-topic")
                target = original.decode() if isinstance(original, bytes) else original
                routing_headers = {k: v.decode("latin-1")
                                   for k, v in _replayed(headers, drop=KEY_HEADER)}
                if KEY_HEADER in headers:
                    routing_headers[KEY_HEADER] = headers[KEY_HEADER]
                replayed += 1
            producer.publish(message.body, exchange=_exchange(settings, target),
                             routing_key=target, headers=routing_headers, delivery_mode=2,
                             content_type="application/json", content_encoding="binary")
            message.ack()  # only after the broker confirmed the copy
    return replayed, passed
