"""Force a full re-embed: bump the embedding cache namespace, then re-send the latest version of
every live document found in documents.v1.

With a new namespace every cache lookup misses and every ledger entry looks stale, so the
embedding worker embeds each re-sent document again and publishes all of its chunks. Documents
whose events are no longer retained in documents.v1 are not re-embedded: keep the topic
compacted by document id (the key) in production so it holds the latest version of each.
"""

from __future__ import annotations

import json

import aiokafka

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.stores.redis import connect
from ragstream.transport.base import OutMessage
from ragstream.transport.kafka import connection_options
from schemas.catalogue import DOCUMENT_DELETED

TOPIC = "documents.v1"


async def reembed(settings: Settings) -> tuple[int, int]:
    """Returns (new cache namespace, documents re-sent)."""
    client = connect(settings)
    try:
        namespace = await client.incr(settings.keys.embedding_namespace)
    finally:
        await client.aclose()
    latest = await _latest_documents(settings)
    live = [m for m in latest.values() if json.loads(m.value).get("type") != DOCUMENT_DELETED]
    async with Publisher(settings) as pub:
        await pub.send_raw(live)
    return namespace, len(live)


async def _latest_documents(settings: Settings) -> dict[bytes, OutMessage]:
    """The last event of each document key, read from the beginning to the current end."""
    consumer = aiokafka.AIOKafkaConsumer(**connection_options(settings), group_id=None,
                                         enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = [aiokafka.TopicPartition(TOPIC, p)
                      for p in sorted(consumer.partitions_for_topic(TOPIC) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        latest: dict[bytes, tuple[int, OutMessage]] = {}
        behind = {tp for tp in partitions if end[tp] > 0}
        while behind:
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                for m in msgs:
                    version = _version(m.value)
                    if m.key is not None and version is not None \
                            and version >= latest.get(m.key, (-1, None))[0]:
                        latest[m.key] = (version, OutMessage(TOPIC, m.key, m.value,
                                                             list(m.headers or ())))
                if msgs and msgs[-1].offset + 1 >= end[tp]:
                    behind.discard(tp)
        return {key: message for key, (_, message) in latest.items()}
    finally:
        await consumer.stop()


def _version(value: bytes | None) -> int | None:
    try:
        return int(json.loads(value)["data"]["version"])
    except (TypeError, ValueError, KeyError):  # undecodable: the DLQ already has it
        return None
