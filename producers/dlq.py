"""Dead letters: read them (``describe``), and replay them to their original topic, bytes
unchanged."""

from __future__ import annotations

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.transport import open_reader
from ragstream.transport.base import OutMessage, Record
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
    other filters. Nothing past ``limit`` is committed. On RabbitMQ the group reads the
    dead-letter queue itself, where a commit consumes: passed-over letters go back to the end
    of the queue."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise ValueError(f"{dlq_topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX})")
    group = settings.group_id(f"dlq-replay.{dlq_topic}.{reason or 'all'}")
    replayed = passed = 0
    async with open_reader(settings, [dlq_topic], group=group, from_beginning=True) as reader, \
            Publisher(settings) as pub:
        ends = await reader.end_offsets()
        while not await reader.caught_up(ends) and (not limit or replayed < limit):
            # at most what the limit leaves: every record handed out is handled and committed
            batch = await reader.getmany(idle_ms, min(500, limit - replayed) if limit else 500)
            if not batch:
                break
            out = []
            for record in batch:
                headers = dict(record.headers)
                if reason and headers.get("x-error-reason", b"").decode() != reason:
                    passed += 1
                    if not reader.replayable:
                        out.append(OutMessage(dlq_topic, record.key, record.value,
                                              list(record.headers)))
                    continue
                original = headers.get("x-original-topic", b"").decode() \
                    or dlq_topic.removesuffix(DLQ_SUFFIX)  # a topic's DLQ holds only its own
                out.append(OutMessage(original, record.key, record.value, _replayed(headers)))
                replayed += 1
            await pub.send_raw(out)
            await reader.commit()
    return replayed, passed


def _replayed(headers: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The original headers without the dead-letter ones, counting this replay."""
    count = int(headers.get("x-replay-count", 0)) + 1
    kept = [(k, v) for k, v in headers.items() if not k.startswith("x-")]
    return kept + [("x-replay-count", str(count).encode())]
