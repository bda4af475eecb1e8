"""Shared pieces of the knowledge-graph tests: one spaCy load per session, graph access, and
the graph's invariants checked from first principles."""

from __future__ import annotations

import asyncio
from collections import Counter
from itertools import combinations

import pytest
import redis.exceptions

from ragstream.config import Settings
from ragstream.graph import GraphStore, KgSettings, open_graph_store
from ragstream.nlp.recognise import Recogniser


@pytest.fixture(scope="session")
def recogniser() -> Recogniser:
    return Recogniser()


@pytest.fixture
async def graph(settings: Settings) -> GraphStore:
    """This test's own graph (named after its group prefix) on the session FalkorDB."""
    store = await open_graph_store(settings, KgSettings())
    yield store
    await store.backend.delete_graph()
    await store.close()


async def snapshot(store: GraphStore) -> dict:
    """Everything the graph holds that a run must reproduce exactly."""
    counts = await store.counts()
    docs = await store.backend.read(
        "MATCH (d:Document) RETURN d.id, d.version, d.deleted ORDER BY d.id", {})
    mentions = await store.backend.read(
        "MATCH (d:Document)-[m:MENTIONS]->(e:Entity) RETURN d.id, e.id, m.count "
        "ORDER BY d.id, e.id", {})
    return {"nodes": counts.nodes, "edges": counts.edges, "weights": counts.edge_weights,
            "documents": docs, "mentions": mentions, "cooccurs": await store.cooccurrence()}


async def assert_consistent(store: GraphStore) -> None:
    """MENTIONS match each document's entity list, and every CO_OCCURS weight equals the number
    of live documents in which both entities co-occur: no lost or doubled update."""
    docs = await store.backend.read(
        "MATCH (d:Document) RETURN d.id, d.deleted, d.entities, d.cooccurring", {})
    mentioned = await store.backend.read(
        "MATCH (d:Document)-[:MENTIONS]->(e:Entity) RETURN d.id, collect(e.id)", {})
    by_doc = {d: sorted(ids) for d, ids in mentioned}
    expected = Counter()
    for doc_id, deleted, entities, co in docs:
        assert by_doc.get(doc_id, []) == sorted(entities), doc_id
        if deleted:
            assert not entities
        expected.update(combinations(sorted(co), 2))
    actual = {(a, b): w for a, b, w in await store.cooccurrence()}
    assert actual == dict(expected)


async def wait_for_versions(store: GraphStore, wanted: dict[str, tuple[int, bool]],
                            timeout: float) -> None:
    """Poll until every document holds its wanted (version, deleted)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            states = await store.document_states(wanted)
            have = {d: (s.version, s.deleted) for d, s in states.items()}
            if all(have.get(d) == v for d, v in wanted.items()):
                return
        except (ConnectionError, redis.exceptions.ConnectionError):
            pass  # the store is down on purpose in the outage test
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"graph did not reach the wanted versions in {timeout}s")
        await asyncio.sleep(0.5)
