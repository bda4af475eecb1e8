"""A refresh killed with SIGKILL mid-write: readers stay on the old version, whole, and the next
run completes the killed version. Real FalkorDB, real Kafka (Tansu), a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import numpy as np
import redis.asyncio

from testing import synthetic_graph as synthetic
from ragstream.gcn.dirty import DirtySet
from ragstream.gcn.jobs import run_job
from ragstream.gcn.store import EmbeddingStore
from ragstream.stack import ManagedProcess
from tests.gcn_support import SMALL, gcn_env, graph_settings, loaded_backend, max_abs_diff
from schemas.envelope import derived_event_id
from tests.helpers import read_topic

UNPUBLISHED = ("MATCH (m:Meta {id: 'gcn'}) MATCH (e:Entity) WHERE e.gcn_v > m.current "
               "RETURN count(e)")


async def test_refresh_killed_mid_write_leaves_readers_on_the_old_version(
        env, settings, topics, falkordb, tmp_path):
    # no retrain past drift: this test is about the patch; small batches make the write slow
    cfg = SMALL.model_copy(update={"drift_threshold": 100.0})
    kg = graph_settings()
    graph = synthetic.generate(2_000, 8_000, 16, topic_size=30, seed=5)
    backend = await loaded_backend(falkordb.url, kg, graph)
    store = EmbeddingStore(backend)
    await run_job("retrain", settings, cfg, kg)
    version, old = await store.visible()
    assert version == 1 and len(old) == 2_000

    changed = [f"e{i}" for i in range(0, 2_000, 20)]
    await synthetic.upsert_entities(backend, changed, np.random.default_rng(1).normal(
        size=(len(changed), 16)).astype(np.float32))
    dirty = DirtySet(redis.asyncio.Redis(port=falkordb.port), kg.graph_name(settings))
    await dirty.add(changed)

    refresh = ManagedProcess(
        "refresh", [sys.executable, "-m", "ragstream", "refresh", "gcn", "--incremental"],
        # one node per write: the write phase lasts far longer than the 10 ms between reads, so
        # the kill lands mid-write even on an idle machine (with 10 per write it sometimes finished)
        tmp_path / "refresh.log", env={**env, **gcn_env(cfg), "RAGSTREAM_KG_GRAPH": kg.graph,
                                       "RAGSTREAM_GCN_WRITE_BATCH": "1"})
    refresh.start()
    reads = 0
    try:
        while True:  # read as a client would, until the refresh has written part of version 2
            version, seen = await store.visible()
            assert version == 1 and seen == old, "a reader saw a mixed or unpublished version"
            reads += 1
            partial = (await backend.read(UNPUBLISHED, {}))[0][0]
            if partial >= 50:
                refresh.signal(signal.SIGKILL)
                break
            assert refresh.alive(), refresh.tail()
            await asyncio.sleep(0.01)
        refresh.process.wait(10)
    finally:
        refresh.stop()
    written_when_killed = (await backend.read(UNPUBLISHED, {}))[0][0]
    assert 50 <= written_when_killed < 2_000
    version, seen = await store.visible()
    assert version == 1 and seen == old and reads > 1

    report = await run_job("incremental", settings, cfg, kg)
    assert report.resumed == 2  # the killed version, completed
    assert report.version == 3  # then the dirty set (not drained by the killed run) again
    assert (await backend.read(UNPUBLISHED, {}))[0][0] == 0
    assert await dirty.size() == 0
    _, incremental = await store.visible()
    await run_job("full", settings, cfg, kg, announce=False)
    _, reference = await store.visible()
    assert max_abs_diff(incremental, reference) <= 1e-5

    announced = [json.loads(r.value) for r in await read_topic(settings, "graph.embeddings.v1")]
    by_version: dict[str, list[str]] = {}
    for e in announced:
        by_version.setdefault(e["data"]["embedding_version"], []).append(e["id"])
    assert set(by_version) == {"1", "2", "3"}
    # each version's events carry the ids derived from (graph, version, part) and no other, so
    # the resumed run announced version 2 under the ids the killed run would have used, and a
    # second announcement of a version would repeat them instead of adding new ones
    graph_name = kg.graph_name(settings)
    for v, ids in by_version.items():
        assert ids == [derived_event_id("gcn", graph_name, int(v), n) for n in range(len(ids))]
    await backend.delete_graph()
    await backend.close()
    await dirty.client.aclose()
