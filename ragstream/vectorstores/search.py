"""Hybrid retrieval over any store: dense and keyword rankings fused with weighted reciprocal
rank fusion.

    score(chunk) = sum over rankings r of  weight_r / (rrf_k + rank_r(chunk))

RRF needs no score calibration between cosine similarity and BM25 (or full-text rank), which
live on different scales. A weight of 0 turns a ranking off (dense only, or keyword only). The
store gives both rankings (ragstream.vectorstores.base); fusing them here makes every backend's
hybrid order the same function of its rankings.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

from ragstream.config import Settings
from ragstream.embedders import Embedder, load_embedder
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import NO_FILTER, Candidates, ChunkStore, Filter


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
    metadata: dict

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Queries one deployment's store. Thread-safe; one per process and store is enough."""

    def __init__(self, settings: Settings, embedder: Embedder, store: ChunkStore | None = None):
        self.store = store if store is not None else open_store(settings)
        self.embedder = embedder
        self.candidates = settings.search_candidates
        self.rrf_k = settings.rrf_k

    def close(self) -> None:
        self.store.close()

    def search(self, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
               per_document: bool = False, where: Filter = NO_FILTER) -> list[Hit]:
        """The ``k`` best chunks for ``query`` admitted by ``where``; with ``per_document``, only
        each document's best."""
        n = max(self.candidates, k)
        vector = self.embedder.embed_query(query) if weights.dense > 0 else None
        found = self.store.candidates(vector, query if weights.sparse > 0 else None, n, where)
        return self._fuse(found, k, weights, per_document)

    def _fuse(self, found: Candidates, k: int, weights: FusionWeights,
              per_document: bool) -> list[Hit]:
        dense, sparse = found.dense, found.sparse
        if per_document:
            dense, sparse = _best_per_doc(found, dense), _best_per_doc(found, sparse)
        group = (lambda c: found.chunks[c].doc_id) if per_document else (lambda c: c)
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
        return [_hit(found, chosen[g], scores[g], ranks[g]) for g in best]


def _best_per_doc(found: Candidates, ranking: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for chunk_id in ranking:
        doc_id = found.chunks[chunk_id].doc_id
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(chunk_id)
    return out


def _hit(found: Candidates, chunk_id: str, score: float, ranks: dict[str, int]) -> Hit:
    record = found.chunks[chunk_id]
    return Hit(record.doc_id, chunk_id, score, record.text, record.position, ranks.get("dense"),
               ranks.get("sparse"), dict(record.metadata))


_searchers: dict[tuple, Searcher] = {}
_searchers_lock = threading.Lock()


def search(settings: Settings, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
           per_document: bool = False, where: Filter = NO_FILTER,
           store: str | None = None) -> list[Hit]:
    """Search with this process's shared Searcher of ``store`` (default: the configured search
    store; the deployment's embedder, RAGSTREAM_EMBEDDER, loads on first use)."""
    store = store or settings.store.search
    key = (str(settings.data_dir), settings.group_prefix, settings.redis_url.get_secret_value(),
           settings.embedder, store)
    with _searchers_lock:
        searcher = _searchers.get(key)
        if searcher is None:
            searcher = _searchers[key] = Searcher(settings, load_embedder(settings),
                                                  open_store(settings, store))
    return searcher.search(query, k, weights, per_document, where)
