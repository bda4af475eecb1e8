"""GCN refresh on a real FalkorDB: exact incremental refresh, only the neighbourhood rewritten."""

from __future__ import annotations

import numpy as np

from testing import synthetic_graph as synthetic
from ragstream.gcn.dirty import DirtySet, dirty_entities
from ragstream.gcn.jobs import run_job
from ragstream.gcn.store import EmbeddingStore
from schemas.payloads import KgChanged
from tests.gcn_support import SMALL, adjacency, graph_settings, loaded_backend, max_abs_diff, within


async def test_incremental_refresh_equals_a_full_pass_and_rewrites_only_the_neighbourhood(
        settings, falkordb, redis_client):
    kg = graph_settings()
    graph = synthetic.generate(1_500, 6_000, 24, topic_size=30, seed=3)
    backend = await loaded_backend(falkordb.url, kg, graph)
    store = EmbeddingStore(backend)
    first = await run_job("retrain", settings, SMALL, kg, announce=False)
    assert (first.mode, first.version, first.written) == ("retrain", 1, 1_500)
    before_pairs = [(graph.ids[a], graph.ids[b]) for a, b in graph.pairs.tolist()]

    # add two entities with edges, change one's text, add and drop edges, delete an entity
    rng = np.random.default_rng(7)
    await synthetic.upsert_entities(backend, ["new-a", "new-b", "e7"],
                                    rng.normal(size=(3, 24)).astype(np.float32))
    added = [("e100", "new-a"), ("new-a", "new-b"), ("e200", "e201"), ("e300", "e900")]
    await synthetic.upsert_edges(backend, added, [1.0, 2.0, 5.0, 1.0])
    dropped = before_pairs[10:13]
    await synthetic.delete_edges(backend, dropped)
    await synthetic.delete_entities(backend, ["e50"])
    changes = [KgChanged(doc_id="d1", doc_version=1, entities=["new-a", "new-b", "e7", "e50"],
                         edges=added + dropped)]
    dirty = DirtySet(_async_redis(falkordb), kg.graph_name(settings))
    await dirty.add(set().union(*map(dirty_entities, changes)))

    report = await run_job("incremental", settings, SMALL, kg, announce=False)
    assert report.mode == "incremental" and report.version == 2
    assert await dirty.size() == 0

    # what may change: 2 hops around the changed entities and the ends of every changed edge
    after_pairs = [p for p in before_pairs if p not in set(dropped)
                   and "e50" not in p] + added
    old_adj, new_adj = adjacency(before_pairs), adjacency(after_pairs)
    changed = {"new-a", "new-b", "e7"} | {x for p in added + dropped for x in p} | old_adj["e50"]
    expected = within(changed, 2, new_adj)
    written = await store.written_at(2)
    assert written == expected
    assert report.written == len(written) < 1_501  # nodes outside it were not rewritten
    assert await store.written_at(1) == {f"e{i}" for i in range(1_500)} - written - {"e50"}

    version, incremental = await store.visible()
    assert version == 2 and "e50" not in incremental and "new-b" in incremental
    full = await run_job("full", settings, SMALL, kg, announce=False)
    assert full.version == 3
    _, reference = await store.visible()
    assert max_abs_diff(incremental, reference) <= 1e-5
    await backend.delete_graph()
    await backend.close()
    await dirty.client.aclose()


def _async_redis(falkordb):
    import redis.asyncio

    return redis.asyncio.Redis(port=falkordb.port)


async def test_a_graph_with_no_text_embeddings_yet_is_a_noop_not_a_crash(settings, falkordb):
    """A fresh stack, before the gazetteer refresh gave any entity its text embedding: the
    read used to fail reshaping an empty tensor, so every refresh job failed."""
    from ragstream.gcn.jobs import run_job
    from ragstream.gcn.store import EmbeddingStore
    from ragstream.graph.backends import FalkorBackend
    from tests.gcn_support import SMALL, graph_settings

    kg = graph_settings()
    backend = FalkorBackend(falkordb.url, kg.graph)
    await backend.ensure_schema()
    try:
        graph = await EmbeddingStore(backend).read_graph()
        assert graph.num_nodes == 0
        for mode in ("incremental", "retrain"):
            report = await run_job(mode, settings, SMALL, kg)
            assert report.mode == "noop", report
    finally:
        await backend.delete_graph()
        await backend.close()
