"""Helpers for the GCN tests: a small synthetic graph in its own FalkorDB graph, and BFS."""

from __future__ import annotations

import uuid
from collections import defaultdict

import numpy as np

from ragstream.config import GcnSettings
from testing import synthetic_graph as synthetic
from ragstream.graph import KgSettings
from ragstream.graph.backends import FalkorBackend

SMALL = GcnSettings(hidden_dim=32, dimension=16, epochs=20, lock_ttl_s=3, lock_wait_s=60)


def gcn_env(cfg: GcnSettings) -> dict[str, str]:
    """The same settings for a subprocess."""
    return {f"RAGSTREAM_GCN_{k.upper()}": str(v) for k, v in cfg.model_dump().items()}


def graph_settings() -> KgSettings:
    return KgSettings(graph=f"gcn-test-{uuid.uuid4().hex[:8]}")


async def loaded_backend(url: str, kg: KgSettings,
                         graph: synthetic.SyntheticGraph) -> FalkorBackend:
    backend = FalkorBackend(url, kg.graph)
    await backend.ensure_schema()
    await synthetic.load(backend, graph)
    return backend


def adjacency(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        out[a].add(b)
        out[b].add(a)
    return out


def within(seeds: set[str], hops: int, adj: dict[str, set[str]]) -> set[str]:
    seen = set(seeds)
    frontier = set(seeds)
    for _ in range(hops):
        frontier = {n for x in frontier for n in adj.get(x, ())} - seen
        seen |= frontier
    return seen


def max_abs_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a)
