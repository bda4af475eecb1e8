"""Hybrid retrieval: dense and BM25 rankings fused with weighted reciprocal rank fusion.

    score(chunk) = sum over rankings r of  weight_r / (rrf_k + rank_r(chunk))

RRF needs no score calibration between cosine similarity and BM25, which live on different
scales. A weight of 0 turns a ranking off (dense only, or BM25 only).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

from ragstream.config import Settings
from ragstream.embedders import Embedder, load_embedder
from ragstream.index.replica import IndexReplica, IndexState


@dataclass(frozen=True)
class FusionWeights:
    dense: float = 1.0
    sparse: float = 1.0

    def __post_init__(self) -> None:
        if self.dense < 0 or self.sparse < 0 or self.dense + self.sparse == 0:
            raise ValueError("fusion weights must be non-negative, and not both zero")


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_id: str
    score: float
    text: str
    position: int
    dense_rank: int | None  # 1-based rank in each list; None where that list missed it
    sparse_rank: int | None

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Queries one deployment's index. Thread-safe; one per process is enough."""

    def __init__(self, settings: Settings, embedder: Embedder):
        self.replica = IndexReplica(settings)
        self.embedder = embedder
        self.candidates = settings.search_candidates
        self.rrf_k = settings.rrf_k

    def close(self) -> None:
        self.replica.close()

    def search(self, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
               per_document: bool = False) -> list[Hit]:
        """The ``k`` best chunks for ``query``; with ``per_document``, only each document's best."""
        n = max(self.candidates, k)
        vector = self.embedder.embed_query(query) if weights.dense > 0 else None
        with self.replica.lock:
            state = self.replica.refresh()
            dense = ([state.by_key[key] for key, _ in state.dense.search(vector, n)
                      if key in state.by_key] if vector is not None else [])
            sparse = ([chunk_id for chunk_id, _ in state.sparse.search(query, n)]
                      if weights.sparse > 0 else [])
            return self._fuse(state, dense, sparse, k, weights, per_document)

    def _fuse(self, state: IndexState, dense: list[str], sparse: list[str], k: int,
              weights: FusionWeights, per_document: bool) -> list[Hit]:
        if per_document:
            dense, sparse = _best_per_doc(state, dense), _best_per_doc(state, sparse)
        group = (lambda c: state.chunks[c].doc_id) if per_document else (lambda c: c)
        scores: dict[str, float] = {}
        ranks: dict[str, dict[str, int]] = {}
        chosen: dict[str, str] = {}  # group -> the chunk shown for it
        for name, ranking, weight in (("dense", dense, weights.dense),
                                      ("sparse", sparse, weights.sparse)):
            for rank, chunk_id in enumerate(ranking, start=1):
                g = group(chunk_id)
                scores[g] = scores.get(g, 0.0) + weight / (self.rrf_k + rank)
                ranks.setdefault(g, {})[name] = rank
                chosen.setdefault(g, chunk_id)
        best = sorted(scores, key=lambda g: (-scores[g], g))[:k]
        return [_hit(state, chosen[g], scores[g], ranks[g]) for g in best]


def _best_per_doc(state: IndexState, ranking: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for chunk_id in ranking:
        doc_id = state.chunks[chunk_id].doc_id
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(chunk_id)
    return out


def _hit(state: IndexState, chunk_id: str, score: float, ranks: dict[str, int]) -> Hit:
    record = state.chunks[chunk_id]
    return Hit(record.doc_id, chunk_id, score, record.text, record.position, ranks.get("dense"),
               ranks.get("sparse"))


_searchers: dict[tuple, Searcher] = {}
_searchers_lock = threading.Lock()


def search(settings: Settings, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
           per_document: bool = False) -> list[Hit]:
    """Search with this process's shared Searcher (the deployment's embedder, RAGSTREAM_EMBEDDER,
    loads on first use)."""
    key = (str(settings.data_dir), settings.group_prefix, settings.redis_url.get_secret_value(),
           settings.embedder)
    with _searchers_lock:
        searcher = _searchers.get(key)
        if searcher is None:
            searcher = _searchers[key] = Searcher(settings, load_embedder(settings))
    return searcher.search(query, k, weights, per_document)
