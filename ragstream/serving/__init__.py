"""Serving search to applications: what every ``Searcher`` of a process shares (docs/serving.md).

- ``caches.QueryVectors``: query vectors by model, cache namespace and text hash, in a
  per-process LRU in front of Redis;
- ``caches.ResultCache``: results keyed by the store's generation, so never staler than the store;
- ``rerank.RerankStage``: a cross-encoder (in process or on Triton) over the fused candidates,
  within a latency budget;
- ``metrics.ServingMetrics``: their hit, miss and fallback counters.

One ``Serving`` per process (the gateway's, the CLI's) holds them; each store's ``Searcher``
takes it, so the caches and the re-ranker are shared across stores.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ragstream.config import Settings
from ragstream.embedders import Embedder
from ragstream.serving.caches import QueryVectors, ResultCache
from ragstream.serving.metrics import ServingMetrics
from ragstream.serving.rerank import RerankStage
from ragstream.stores.redis import connect_sync


class Serving:
    def __init__(self, settings: Settings, embedder: Embedder,
                 metrics: ServingMetrics | None = None):
        config = settings.serving
        self.metrics = metrics or ServingMetrics(CollectorRegistry())
        self._redis = connect_sync(settings)
        self.query_vectors = QueryVectors(self._redis, settings.keys, embedder,
                                          config.query_vectors_entries,
                                          config.query_vectors_ttl_s, self.metrics)
        self.results = ResultCache(config.result_cache_entries, config.result_cache_mb,
                                   config.result_cache_ttl_s, self.metrics)
        self.rerank = RerankStage(settings, self.metrics)

    def close(self) -> None:
        self.rerank.close()
        self._redis.close()
