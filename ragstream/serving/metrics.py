"""The serving path's Prometheus series: cache hits and misses, re-ranking outcomes and time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ragstream.metrics import LATENCY_BUCKETS

# what the re-ranking stage did with a query's fused candidates
RERANK_OUTCOMES = ("reranked", "timeout", "failed", "overloaded", "unavailable")


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = self.registry = registry
        self.query_vector_hits = Counter(
            "ragstream_query_vector_cache_hits", "Query vectors found in a cache",
            ("layer",), registry=r)  # layer: process (the LRU) or redis
        self.query_vector_misses = Counter(
            "ragstream_query_vector_cache_misses", "Query vectors the model computed",
            registry=r)
        self.query_vector_errors = Counter(
            "ragstream_query_vector_cache_errors",
            "Redis errors reading or writing query vectors (the search went on without it)",
            registry=r)
        self.result_hits = Counter("ragstream_search_result_cache_hits",
                                   "Searches answered from the result cache", ("store",),
                                   registry=r)
        self.result_misses = Counter("ragstream_search_result_cache_misses",
                                     "Searches the store answered", ("store",), registry=r)
        self.result_entries = Gauge("ragstream_search_result_cache_entries",
                                    "Results held in this process's cache", registry=r)
        self.result_bytes = Gauge("ragstream_search_result_cache_bytes",
                                  "Approximate size of the cached results' texts", registry=r)
        self.reranks = Counter("ragstream_search_rerank",
                               "Queries through the re-ranking stage, by outcome; any outcome "
                               "but reranked returned the fused order", ("outcome",), registry=r)
        self.rerank_seconds = Histogram("ragstream_search_rerank_seconds",
                                        "Time of one re-ranking model call",
                                        buckets=LATENCY_BUCKETS, registry=r)
        for outcome in RERANK_OUTCOMES:  # 0, not "no data", before the first fallback
            self.reranks.labels(outcome)
        for layer in ("process", "redis"):
            self.query_vector_hits.labels(layer)
