"""Synthetic entity graphs for benchmarks and tests, loaded into FalkorDB in batches.

The graph imitates co-occurrence: entities fall into topics of ``topic_size`` and most edges join
entities of the same topic, with a ``cross_topic`` share joining random pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ragstream.graph.backends import CypherBackend

UPSERT_ENTITIES = """
UNWIND $rows AS r
MERGE (e:Entity {id: r.id})
ON CREATE SET e.name = r.id, e.type = 'SYNTHETIC', e.aliases = []
SET e.embedding = vecf32(r.vector)
"""

UPSERT_EDGES = """
UNWIND $rows AS r
MATCH (a:Entity {id: r.a}), (b:Entity {id: r.b})
MERGE (a)-[c:CO_OCCURS]->(b)
SET c.weight = r.weight
"""

DELETE_EDGES = """
UNWIND $rows AS r
MATCH (:Entity {id: r.a})-[c:CO_OCCURS]->(:Entity {id: r.b})
DELETE c
"""

DELETE_ENTITIES = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
DETACH DELETE e
"""


@dataclass(frozen=True)
class SyntheticGraph:
    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit rows
    pairs: np.ndarray    # (m, 2) node indices, a < b, unique
    weights: np.ndarray  # (m,) co-occurrence counts


def generate(nodes: int, edges: int, dimension: int, *, topic_size: int = 50,
             cross_topic: float = 0.02, seed: int = 0) -> SyntheticGraph:
    rng = np.random.default_rng(seed)
    topics = max(nodes // topic_size, 1)
    topic_of = rng.integers(0, topics, nodes)
    members = [np.flatnonzero(topic_of == t) for t in range(topics)]
    centres = rng.normal(size=(topics, dimension))
    vectors = centres[topic_of] + rng.normal(scale=1.0, size=(nodes, dimension))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    found: set[tuple[int, int]] = set()
    while len(found) < edges:
        want = edges - len(found)
        cross = rng.random(want) < cross_topic
        a = rng.integers(0, nodes, want)
        b = rng.integers(0, nodes, want)
        for i in np.flatnonzero(~cross):  # same topic: b is another member of a's topic
            group = members[topic_of[a[i]]]
            b[i] = group[rng.integers(0, len(group))]
        for x, y in zip(a.tolist(), b.tolist()):
            if x != y:
                found.add((min(x, y), max(x, y)))
    pairs = np.array(sorted(found)[:edges], dtype=np.int64).reshape(-1, 2)
    weights = (1 + rng.geometric(0.5, len(pairs)) - 1).astype(np.float32)
    return SyntheticGraph([f"e{i}" for i in range(nodes)], vectors, pairs, weights)


async def load(backend: CypherBackend, graph: SyntheticGraph, batch: int = 5_000) -> None:
    """Upsert every entity, then every edge, in UNWIND batches (FalkorDB: vecf32)."""
    await upsert_entities(backend, graph.ids, graph.vectors, batch)
    await upsert_edges(backend, [(graph.ids[a], graph.ids[b]) for a, b in graph.pairs.tolist()],
                       graph.weights.tolist(), batch)


async def upsert_entities(backend: CypherBackend, ids: list[str], vectors: np.ndarray,
                          batch: int = 5_000) -> None:
    values = vectors.tolist()
    for s in range(0, len(ids), batch):
        await backend.write(UPSERT_ENTITIES, {"rows": [
            {"id": i, "vector": v} for i, v in zip(ids[s:s + batch], values[s:s + batch])]})


async def upsert_edges(backend: CypherBackend, pairs: list[tuple[str, str]],
                       weights: list[float], batch: int = 5_000) -> None:
    for s in range(0, len(pairs), batch):
        await backend.write(UPSERT_EDGES, {"rows": [
            {"a": a, "b": b, "weight": w}
            for (a, b), w in zip(pairs[s:s + batch], weights[s:s + batch])]})


async def delete_edges(backend: CypherBackend, pairs: list[tuple[str, str]]) -> None:
    await backend.write(DELETE_EDGES, {"rows": [{"a": a, "b": b} for a, b in pairs]})


async def delete_entities(backend: CypherBackend, ids: list[str]) -> None:
    await backend.write(DELETE_ENTITIES, {"ids": list(ids)})
