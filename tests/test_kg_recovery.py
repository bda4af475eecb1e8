"""The entity-linking worker survives SIGKILL and a graph-store outage with nothing lost or
doubled. Worker subprocesses, real Tansu, real FalkorDB."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest

from producers import reuters
from producers.events import document_deleted, document_upserted
from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.graph import KgSettings, open_graph_store
from ragstream.stack import FalkorDB, free_port
from tests.helpers import running, start_worker
from tests.kg_support import (  # noqa: F401  (fixtures)
    assert_consistent, graph, recogniser, snapshot, wait_for_versions,
)
from workers.entity_linking import EntityLinkingWorker

pytestmark = pytest.mark.slow


def corpus(n: int = 160):
    """n Reuters articles, then updates of every 5th (new text) and deletes of every 7th."""
    docs = list(reuters.load(limit=n + 40))
    events = [document_upserted(d.doc_id, d.text, version=1, title=d.title) for d in docs[:n]]
    events += [document_upserted(d.doc_id, docs[n + i % 40].text, version=2)
               for i, d in enumerate(docs[:n:5])]
    events += [document_deleted(d.doc_id, version=3) for d in docs[:n:7]]
    final: dict[str, tuple[int, bool]] = {}
    for e in events:
        final[e.subject] = max(final.get(e.subject, (-1, False)),
                               (e.data["version"], e.type.endswith("deleted")))
    return events, final


def with_prefix(env: dict[str, str], **extra) -> dict[str, str]:
    """A fresh consumer group and graph; small batches, so a run has many of them to cut."""
    return {**env, "RAGSTREAM_GROUP_PREFIX": f"t{uuid.uuid4().hex[:8]}",
            "RAGSTREAM_BATCH_MAX_RECORDS": "16", **extra}


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


async def progress(store, doc_ids, at_least: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(await store.document_states(doc_ids)) < at_least:
        assert asyncio.get_running_loop().time() < deadline, "no progress"
        await asyncio.sleep(0.3)


async def test_sigkill_mid_run_gives_the_clean_runs_graph(env, settings, topics, graph, recogniser,
                                                          tmp_path: Path):
    events, final = corpus()
    async with Publisher(settings) as pub:
        await pub.publish(events)

    # Orphans are pruned in both runs: kept orphans record which versions a run happened to
    # write before their successors arrived, which depends on how the batches fell.
    async with running(EntityLinkingWorker(KgSettings(orphans="prune"), recogniser), settings):
        await wait_for_versions(graph, final, 120)
    clean = await snapshot(graph)

    # the same events for a second group and graph: killed mid-run, then restarted
    killed_env = with_prefix(env, RAGSTREAM_KG_ORPHANS="prune")
    store = await open_graph_store(settings_of(killed_env), KgSettings(orphans="prune"))
    try:
        first = start_worker("entity_linking", killed_env, tmp_path, tag="-killed")
        await progress(store, final, len(final) // 3, 90)
        first.signal(signal.SIGKILL)
        first.process.wait()
        second = start_worker("entity_linking", killed_env, tmp_path, tag="-restarted")
        try:
            await wait_for_versions(store, final, 150)
        finally:
            second.stop()
        assert await snapshot(store) == clean
        await assert_consistent(store)
    finally:
        await store.backend.delete_graph()
        await store.close()


async def test_graph_store_outage_pauses_the_worker_and_loses_nothing(env, settings, topics,
                                                                     tmp_path: Path):
    server = FalkorDB(tmp_path / "outage")
    server.start()
    worker_env = with_prefix(env, RAGSTREAM_REDIS_URL=server.url)
    events, final = corpus(120)
    async with Publisher(settings) as pub:
        await pub.publish(events)
    store = None
    worker = start_worker("entity_linking", worker_env, tmp_path, tag="-outage")
    try:
        store = await open_graph_store(settings_of(worker_env), KgSettings())
        await progress(store, final, 10, 90)
        server.stop()
        await asyncio.sleep(20)
        assert worker.alive(), "the worker must wait for the store, not die"
        server = FalkorDB(tmp_path / "outage", port=server.port)
        server.start()
        await wait_for_versions(store, final, 150)
        assert worker.alive()
        await assert_consistent(store)
        mentions = await store.mentions(d for d, (_, deleted) in final.items() if not deleted)
        assert mentions, "the live documents keep their mentions"
        log = (tmp_path / "logs" / "entity_linking-outage.log").read_text()
        assert "store unavailable, partitions paused" in log
    finally:
        worker.stop()
        if store is not None:
            await store.close()
        server.stop()


async def test_worker_starts_while_the_graph_store_is_down_and_waits_for_it(env, settings, topics,
                                                                           tmp_path: Path):
    """No FalkorDB at start: the worker must come up, hold its batches (backpressure) and finish
    by itself once the store appears, instead of crashing in setup."""
    port = free_port()
    worker_env = with_prefix(env, RAGSTREAM_REDIS_URL=f"redis://127.0.0.1:{port}")
    events, final = corpus(40)
    async with Publisher(settings) as pub:
        await pub.publish(events)
    worker = start_worker("entity_linking", worker_env, tmp_path, tag="-down-at-start")
    server, store = None, None
    try:
        log = tmp_path / "logs" / "entity_linking-down-at-start.log"
        deadline = asyncio.get_running_loop().time() + 90
        while "store unavailable, partitions paused" not in log.read_text(errors="replace"):
            assert worker.alive(), f"the worker died with the store down:\n{worker.tail()}"
            assert asyncio.get_running_loop().time() < deadline, "no batch met the closed store"
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)  # several backoff rounds with the store still down
        assert worker.alive(), f"the worker died with the store down:\n{worker.tail()}"
        server = FalkorDB(tmp_path / "late", port=port)
        server.start()
        store = await open_graph_store(settings_of(worker_env), KgSettings())
        await wait_for_versions(store, final, 120)
        assert worker.alive()
        await assert_consistent(store)
    finally:
        worker.stop()
        if store is not None:
            await store.close()
        if server is not None:
            server.stop()
