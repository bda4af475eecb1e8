"""Helpers for the embedding, reindex and index tests: run the pipeline, read the index state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis

from ragstream.config import Settings
from ragstream.stores.keys import Keys
from tests.helpers import eventually, running
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
    return {k.decode()[len(start):]: client.hget(k, "text_hash").decode()
            for k in client.scan_iter(match=f"{start}*", count=1000)}


def log_length(client: redis.Redis, prefix: str) -> int:
    return client.xlen(Keys(prefix).index_log)


def metric(runtime, name: str, **labels: str) -> float:
    """A metric sample's value from a runtime's registry (0 when not yet observed)."""
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def processed(runtime, topic: str) -> float:
    return metric(runtime, "ragstream_events_processed_total", worker=runtime.worker.name,
                  topic=topic)


async def wait_for_chunks(client: redis.Redis, prefix: str, expected: dict[str, str],
                          timeout: float = 60) -> None:
    async def done() -> bool:
        return indexed_chunks(client, prefix) == expected
    await eventually(done, timeout, message=f"{len(expected)} chunks indexed")
