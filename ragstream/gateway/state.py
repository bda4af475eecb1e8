"""What the routes share, one per app: settings, publisher, keys, limiter, metrics, the result
router and the lazily loaded models."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from ragstream.publisher import Publisher
from ragstream import tracing
from ragstream.config import Settings
from ragstream.gateway.auth import KeyStore
from ragstream.gateway.ratelimit import RateLimiter
from ragstream.gateway.results import ResultRouter
from ragstream.metrics import LATENCY_BUCKETS
from ragstream.serving.metrics import ServingMetrics
from ragstream.stores.redis import connect


class Gateway:
    """Started and stopped by the app's lifespan."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = KeyStore(settings)
        self.registry = CollectorRegistry()
        self.requests = Counter("ragstream_gateway_requests", "HTTP requests",
                                ("route", "status"), registry=self.registry)
        self.latency = Histogram("ragstream_gateway_request_seconds", "HTTP request latency",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events_accepted = Counter("ragstream_gateway_events_accepted",
                                       "Events accepted and published", registry=self.registry)
        self.serving_metrics = ServingMetrics(self.registry)
        self.publisher: Publisher | None = None
        self.limiter: RateLimiter | None = None
        self.results: ResultRouter | None = None
        self.redis = None
        self._searchers: dict = {}  # store name -> Searcher, all sharing one Serving
        self._serving = None
        self._embedder = None
        self._models_lock = asyncio.Lock()

    async def start(self) -> None:
        tracing.configure_from_env("ragstream-gateway")
        self.keys.reload()
        self.redis = connect(self.settings)
        self.limiter = RateLimiter(self.redis, self.settings.keys)
        self.publisher = Publisher(self.settings)
        await self.publisher.__aenter__()
        self.results = ResultRouter(self.settings, self.publisher)
        self.results.start()

    async def stop(self) -> None:
        if self.results is not None:
            await self.results.stop()
        if self.publisher is not None:
            await self.publisher.__aexit__(None, None, None)
        if self.redis is not None:
            await self.redis.aclose()
        for searcher in self._searchers.values():
            searcher.close()
        if self._serving is not None:
            self._serving.close()

    async def embedder(self):
        async with self._models_lock:
            if self._embedder is None:
                from ragstream.embedders import load_embedder

                # the deployment's embedder (RAGSTREAM_EMBEDDER): the vectors the index holds
                self._embedder = await asyncio.to_thread(load_embedder, self.settings)
        return self._embedder

    async def searcher(self, store: str | None = None):
        """The Searcher of ``store`` (default: the configured search store). Every store's
        shares this process's caches, re-ranker and metrics (ragstream.serving)."""
        embedder = await self.embedder()
        store = store or self.settings.store.search
        async with self._models_lock:
            if self._serving is None:
                from ragstream.serving import Serving

                serving = Serving(self.settings, embedder, self.serving_metrics)
                await asyncio.to_thread(serving.rerank.warm)
                self._serving = serving
            if store not in self._searchers:
                from ragstream.vectorstores import open_store
                from ragstream.vectorstores.search import Searcher

                opened = await asyncio.to_thread(open_store, self.settings, store)
                self._searchers[store] = Searcher(self.settings, embedder, opened,
                                                  self._serving)
        return self._searchers[store]
