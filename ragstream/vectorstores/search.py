"""Hybrid retrieval over any store: dense and keyword rankings fused with weighted reciprocal
rank fusion, then, when asked, re-ranked by a cross-encoder.

    score(chunk) = sum over rankings r of  weight_r / (rrf_k + rank_r(chunk))

RRF needs no score calibration between cosine similarity and BM25 (or full-text rank), which
live on different scales. A weight of 0 turns a ranking off (dense only, or keyword only). The
store gives both rankings (ragstream.vectorstores.base); fusing them here makes every backend's
hybrid order the same function of its rankings.

``Searcher.search_many`` answers a batch: the results cache first (keyed by the store's
generation, so never stale), then every query vector the caches lack from one model call, the
store read for each query concurrently, and one re-ranking call for the queries that ask for it
(ragstream.serving).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from ragstream.config import Settings
from ragstream.embedders import Embedder, load_embedder
from ragstream.serving import Serving
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import (NO_FILTER, Candidates, ChunkStore, Filter, Search,
                                         canonical_metadata)


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
    rerank_score: float | None = None  # the cross-encoder's, where the stage re-ranked it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    k: int = 10
    weights: FusionWeights = FusionWeights()
    per_document: bool = False
    where: Filter = NO_FILTER
    rerank: bool = False

    def cache_key(self) -> tuple:
        """Everything that shapes the answer (the store and its generation come on top)."""
        doc_ids = None if self.where.doc_ids is None else tuple(sorted(self.where.doc_ids))
        return (self.query, self.k, self.weights.dense, self.weights.sparse, self.per_document,
                doc_ids, canonical_metadata(self.where.metadata), self.rerank)


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    cached: bool  # answered from the result cache
    # "off" (not asked), or what the re-ranking stage did: "reranked", or a fallback to the
    # fused order ("timeout", "failed", "overloaded", "unavailable")
    rerank: str


class Searcher:
    """Queries one deployment's store. Thread-safe; one per process and store is enough. Pass
    one ``Serving`` to every store's Searcher of a process, so they share caches and re-ranker."""

    def __init__(self, settings: Settings, embedder: Embedder, store: ChunkStore | None = None,
                 serving: Serving | None = None):
        self.store = store if store is not None else open_store(settings)
        self.embedder = embedder
        self.candidates = settings.search_candidates
        self.rrf_k = settings.rrf_k
        self.max_batch = settings.serving.max_batch_queries
        self._owns_serving = serving is None
        self.serving = serving if serving is not None else Serving(settings, embedder)
        self._reads = ThreadPoolExecutor(settings.serving.search_threads,
                                         thread_name_prefix=f"search-{self.store.name}")

    def close(self) -> None:
        self._reads.shutdown(wait=False, cancel_futures=True)
        self.store.close()
        if self._owns_serving:
            self.serving.close()

    def search(self, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
               per_document: bool = False, where: Filter = NO_FILTER,
               rerank: bool = False) -> list[Hit]:
        """The ``k`` best chunks for ``query`` admitted by ``where``; with ``per_document``, only
        each document's best; with ``rerank``, in the re-ranker's order (or the fused order, if
        it could not answer in time: ``search_many`` says which)."""
        return self.search_many([SearchRequest(query, k, weights, per_document, where,
                                               rerank)])[0].hits

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """A result per request, in order. Raises ValueError for more requests than
        ``RAGSTREAM_SERVING_MAX_BATCH_QUERIES``, or a re-ranking no re-ranker can serve."""
        if len(requests) > self.max_batch:
            raise ValueError(f"{len(requests)} queries in one batch; at most {self.max_batch} "
                             "(RAGSTREAM_SERVING_MAX_BATCH_QUERIES)")
        if any(r.rerank for r in requests) and not self.serving.rerank.configured:
            raise ValueError("no re-ranker is configured (RAGSTREAM_SERVING_RERANKER)")
        # Read before the store is: results of a newer state filed under an older generation
        # are never served after the change (the generation moved on), so none is stale.
        generation = self.store.generation()
        cache, name = self.serving.results, self.store.name
        results: list[SearchResult | None] = []
        for r in requests:
            held = cache.get(name, generation, r.cache_key())
            results.append(None if held is None else SearchResult(
                [replace(h, metadata=dict(h.metadata)) for h in held[0]], True, held[1]))
        todo = [i for i, result in enumerate(results) if result is None]
        for i, result in zip(todo, self._answer([requests[i] for i in todo]), strict=True):
            results[i] = result
            if result.rerank in ("off", "reranked"):  # a fallback order is not the answer
                cache.put(name, generation, requests[i].cache_key(),
                          (tuple(result.hits), result.rerank),
                          sum(len(h.text) for h in result.hits))
        return results

    def _answer(self, requests: list[SearchRequest]) -> list[SearchResult]:
        if not requests:
            return []
        dense = [r.query for r in requests if r.weights.dense > 0]
        vectors = iter(self.serving.query_vectors.vectors(dense) if dense else ())
        reads = [self._search(next(vectors) if r.weights.dense > 0 else None, r)
                 for r in requests]
        if len(reads) == 1 or self.store.batched_reads:
            found = self.store.candidates_many(reads)
        else:  # a network store: its reads overlap on the searcher's threads
            found = list(self._reads.map(lambda read: self.store.candidates(*read), reads))
        fused = [self._fuse(f, self._depth(r), r.weights, r.per_document)
                 for f, r in zip(found, requests, strict=True)]
        outcomes = ["off"] * len(requests)
        asked = [i for i, r in enumerate(requests) if r.rerank]
        if asked:
            scores, outcome = self.serving.rerank.rerank(
                [(requests[i].query, [h.text for h in fused[i]]) for i in asked])
            for j, i in enumerate(asked):
                outcomes[i] = outcome
                if scores is not None:
                    rescored = [replace(h, rerank_score=float(s))
                                for h, s in zip(fused[i], scores[j], strict=True)]
                    fused[i] = sorted(rescored, key=lambda h: -h.rerank_score)  # stable on ties
        return [SearchResult(hits[:r.k], False, outcome)
                for hits, r, outcome in zip(fused, requests, outcomes, strict=True)]

    def _depth(self, r: SearchRequest) -> int:
        """Fused hits to keep: ``k``, or the re-ranker's top-k if it is deeper."""
        return max(r.k, self.serving.rerank.top_k) if r.rerank else r.k

    def _search(self, vector: np.ndarray | None, r: SearchRequest) -> Search:
        n = max(self.candidates, self._depth(r))
        return vector, r.query if r.weights.sparse > 0 else None, n, r.where

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


def shared_searcher(settings: Settings, store: str | None = None) -> Searcher:
    """This process's shared Searcher of ``store`` (default: the configured search store; the
    deployment's embedder, RAGSTREAM_EMBEDDER, loads on first use)."""
    store = store or settings.store.search
    key = (str(settings.data_dir), settings.group_prefix, settings.redis_url.get_secret_value(),
           settings.embedder, store)
    with _searchers_lock:
        searcher = _searchers.get(key)
        if searcher is None:
            searcher = _searchers[key] = Searcher(settings, load_embedder(settings),
                                                  open_store(settings, store))
    return searcher


def search(settings: Settings, query: str, k: int = 10, weights: FusionWeights = FusionWeights(),
           per_document: bool = False, where: Filter = NO_FILTER,
           store: str | None = None, rerank: bool = False) -> list[Hit]:
    """The hits of one query, with this process's shared Searcher of ``store``."""
    return shared_searcher(settings, store).search(query, k, weights, per_document, where, rerank)
