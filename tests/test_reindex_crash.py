"""Embedding and reindex workers as separate processes, SIGKILLed mid-ingest and restarted: the
final index equals a clean run's, with the same chunk ids and no duplicates."""

from __future__ import annotations

import hashlib
import signal

import pytest

from producers.events import document_upserted
from ragstream.publisher import Publisher
from ragstream.index.replica import IndexReplica
from tests.helpers import eventually, start_worker
from tests.retrieval_support import indexed_chunks, log_length, wait_for_chunks

DOCS = 120


def _paragraphs(i: int) -> tuple[str, str]:
    """Two paragraphs of 116-140 word pieces each, distinct per document: over the chunker's
    32-token floor and under its 240-token budget, so each is exactly one chunk."""
    first = (f"Report {i} on subject {i % 13}. "
             + " ".join(f"term{(i * 31 + j * 7) % 997}" for j in range(40)) + ".")
    second = (f"Findings of report {i}: "
              + " ".join(f"value{(i * 17 + j * 11) % 991}" for j in range(40))
              + f". End of report {i}.")
    return first, second


def _text(i: int) -> str:
    return "\n\n".join(_paragraphs(i))


@pytest.mark.slow
async def test_killed_workers_converge_to_the_clean_index(env, settings, topics, redis_client,
                                                          tmp_path):
    # the clean index, by hand: a chunk per paragraph, "doc<i>#<position>" -> sha256 of its text
    clean = {f"doc{i}#{position}": hashlib.sha256(paragraph.encode()).hexdigest()
             for i in range(DOCS) for position, paragraph in enumerate(_paragraphs(i))}
    async with Publisher(settings) as pub:
        await pub.publish(document_upserted(f"doc{i}", _text(i), version=1) for i in range(DOCS))

    env = {**env, "RAGSTREAM_BATCH_MAX_RECORDS": "8"}  # small batches: the kill lands mid-ingest
    prefix = settings.group_prefix
    workers = [start_worker(n, env, tmp_path, tag="-1") for n in ("embedding", "reindex")]
    try:
        async def partly_indexed() -> bool:
            return log_length(redis_client, prefix) >= 20
        await eventually(partly_indexed, 90, message="ingest under way")
        for w in workers:
            w.signal(signal.SIGKILL)
            w.process.wait(10)
        assert 0 < len(indexed_chunks(redis_client, prefix)) < len(clean)

        workers = [start_worker(n, env, tmp_path, tag="-2") for n in ("embedding", "reindex")]
        await wait_for_chunks(redis_client, prefix, clean, timeout=120)
    finally:
        for w in workers:
            w.stop()

    replica = IndexReplica(settings)
    try:
        state = replica.refresh()
        assert set(state.chunks) == set(clean)
        assert len(state.dense) == len(clean) and len(state.sparse) == len(clean)  # no duplicates
    finally:
        replica.close()
