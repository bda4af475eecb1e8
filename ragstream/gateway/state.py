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
        self.publisher: Publisher | None = None
        self.limiter: RateLimiter | None = None
        self.results: ResultRouter | None = None
        self.redis = None
        self._searcher = None
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
        if self._searcher is not None:
            self._searcher.close()

    async def embedder(self):
        async with self._models_lock:
            if self._embedder is None:
                from ragstream.embedders import load_embedder

                # the deployment's embedder (RAGSTREAM_EMBEDDER): the vectors the index holds
                self._embedder = await asyncio.to_thread(load_embedder, self.settings)
        return self._embedder

    async def searcher(self):
        embedder = await self.embedder()
        async with self._models_lock:
            if self._searcher is None:
                from ragstream.vectorstores.search import Searcher

                self._searcher = Searcher(self.settings, embedder)
        return self._searcher
