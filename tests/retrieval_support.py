"""Helpers for the embedding, reindex and index tests: run the pipeline, read the index state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis

from ragstream.config import Settings
from ragstream.stores.keys import Keys
from tests.helpers import eventually, handled, read_topic, running
from workers.embedding import EmbeddingWorker
from workers.reindex import ReindexWorker


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, embedder, group_suffix: str = "") -> AsyncIterator[tuple]:
    """The embedding and reindex workers, in this process, on the real broker and store.
    A ``group_suffix`` gives them fresh consumer groups: they read their topics from the start."""
    def group(worker: str) -> str | None:
        return settings.group_id(worker) + group_suffix if group_suffix else None

    async with running(EmbeddingWorker(embedder), settings, group_id=group("embedding")) \
            as embedding, running(ReindexWorker(), settings, group_id=group("reindex")) as reindex:
        yield embedding, reindex


def indexed_chunks(client: redis.Redis, prefix: str) -> dict[str, str]:
    """chunk id -> text hash of every chunk in the durable index."""
    start = Keys(prefix).index_chunk_prefix
    chunks = {}
    for key in client.scan_iter(match=f"{start}*", count=1000):
        text_hash = client.hget(key, "text_hash")
        if text_hash is not None:  # a delete can land between the scan and the read (CI did)
            chunks[key.decode()[len(start):]] = text_hash.decode()
    return chunks


def log_length(client: redis.Redis, prefix: str) -> int:
    return client.xlen(Keys(prefix).index_log)


async def settled(settings: Settings, embedding, reindex, documents: int,
                  timeout: float = 60) -> None:
    """Both workers are done with everything: the embedding worker handled ``documents``
    document events, and the reindex worker every chunk event that made. A store state alone
    cannot show this: a document keyed to another partition may not have been read yet."""
    async def embedded() -> bool:
        return handled(embedding, "documents.v1") >= documents
    await eventually(embedded, timeout, message=f"{documents} document events handled")
    assert handled(embedding, "documents.v1") == documents
    published = len(await read_topic(settings, "chunks.embedded.v1", timeout=1))

    async def indexed() -> bool:
        return handled(reindex, "chunks.embedded.v1") >= published
    await eventually(indexed, timeout, message=f"{published} chunk events handled")
    assert handled(reindex, "chunks.embedded.v1") == published


async def wait_for_chunks(client: redis.Redis, prefix: str, expected: dict[str, str],
                          timeout: float = 60) -> None:
    async def done() -> bool:
        return indexed_chunks(client, prefix) == expected
    await eventually(done, timeout, message=f"{len(expected)} chunks indexed")
