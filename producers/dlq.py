"""Dead-letter replay: put dead letters back on their original topic, bytes unchanged."""

from __future__ import annotations

import aiokafka
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from producers.publisher import Publisher
from ragstream.config import Settings
from ragstream.transport.base import OutMessage
from ragstream.transport.kafka import connection_options
from schemas.catalogue import DLQ_SUFFIX


async def replay(settings: Settings, dlq_topic: str, *, reason: str | None = None,
                 limit: int = 0, idle_ms: int = 2000) -> tuple[int, int]:
    """Replay what the DLQ holds now, then stop. Returns (replayed, passed over).

    A consumer group per topic and reason filter remembers how far replay got, so running it
    again replays only newer dead letters. Dead letters a filter passes over stay available to
    other filters. Nothing past ``limit`` is committed."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{dlq_topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX})")
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
                        kept = [(k, v) for k, v in (m.headers or ()) if not k.startswith("x-")]
                        count = int(headers.get("x-replay-count", b"0")) + 1
                        kept.append(("x-replay-count", str(count).encode()))
                        out.append(OutMessage(headers["x-original-topic"].decode(), m.key,
                                              m.value, kept))
                await pub.send_raw(out)
                await consumer.commit({TopicPartition(tp.topic, tp.partition):
                                       OffsetAndMetadata(off, "") for tp, off in handled.items()})
                replayed += len(out)
    finally:
        await consumer.stop()
    return replayed, passed
