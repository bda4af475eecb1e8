"""Force a full re-embed: bump the embedding cache namespace, then re-send the latest version of
every live document found in documents.v1.

With a new namespace every cache lookup misses and every ledger looks stale, so the embedding
worker embeds each re-sent document again and publishes all of its chunks.

The reembed group reads documents.v1 up to its end and commits only after the re-send, so the
re-sent latest versions are where the next run starts: the topic past the group's position
always holds every live document. That works the same on RabbitMQ, where the group's durable
queue is the only history there is: it must be declared (like a worker's) before documents are
published, and it holds each live document once after every run. On Kafka, documents whose
events are no longer retained are not re-embedded: keep the topic compacted by document id.
"""

from __future__ import annotations

import json

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.stores.redis import connect
from ragstream.transport import open_reader
from ragstream.transport.base import OutMessage, Reader
from schemas.catalogue import DOCUMENT_DELETED

TOPIC = "documents.v1"
GROUP = "reembed"


def reembed_group(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The group and topic to declare with the workers' (``ensure_topics``) on RabbitMQ."""
    return {settings.group_id(GROUP): (TOPIC,)}


async def reembed(settings: Settings, idle_ms: int = 2000) -> tuple[int, int]:
    """Returns (new cache namespace, documents re-sent)."""
    client = connect(settings)
    try:
        namespace = await client.incr(settings.keys.embedding_namespace)
    finally:
        await client.aclose()
    async with open_reader(settings, [TOPIC], group=settings.group_id(GROUP),
                           from_beginning=True) as reader:
        latest = await _latest_documents(reader, idle_ms)
        live = [m for m in latest.values() if json.loads(m.value).get("type") != DOCUMENT_DELETED]
        async with Publisher(settings) as pub:
            await pub.send_raw(live)
        await reader.commit()
    return namespace, len(live)


async def _latest_documents(reader: Reader, idle_ms: int) -> dict[bytes, OutMessage]:
    """The last event of each document key, read up to the end as it was at the start."""
    ends = await reader.end_offsets()
    latest: dict[bytes, tuple[int, OutMessage]] = {}
    while not await reader.caught_up(ends):
        batch = await reader.getmany(idle_ms, 500)
        if not batch:  # a RabbitMQ queue that another reader drained: nothing more will come
            break
        for record in batch:
            version = _version(record.value)
            if record.key is not None and version is not None \
                    and version >= latest.get(record.key, (-1, None))[0]:
                latest[record.key] = (version, OutMessage(TOPIC, record.key, record.value,
                                                          list(record.headers)))
    return {key: message for key, (_, message) in latest.items()}


def _version(value: bytes | None) -> int | None:
    try:
        return int(json.loads(value)["data"]["version"])
    except (TypeError, ValueError, KeyError):  # undecodable: the DLQ already has it
        return None
