"""What a worker is handed at setup: the settings tree, the metrics registry, and the clients
built from the settings, so every worker honours the same configuration (``RAGSTREAM_EMBEDDER``,
``RAGSTREAM_REDIS_URL``, the graph store). A test hands in its own clients here.

The clients are built on first use: a worker that needs no model loads none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragstream.config import KgSettings, Settings
from ragstream.metrics import RuntimeMetrics
from ragstream.stores.redis import connect

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ragstream.embedders import Embedder
    from ragstream.graph.backends import CypherBackend


class WorkerContext:
    def __init__(self, settings: Settings, metrics: RuntimeMetrics, *,
                 embedder: Embedder | None = None,
                 redis: Callable[[], Redis] | None = None,
                 graph_backend: Callable[[KgSettings], CypherBackend] | None = None):
        self.settings = settings
        self.metrics = metrics
        self._embedder = embedder
        self._redis = redis
        self._graph_backend = graph_backend
        self._loading = threading.Lock()  # workers load the embedder off the event loop

    @property
    def embedder(self) -> Embedder:
        """The deployment's embedder (``RAGSTREAM_EMBEDDER``), loaded once; blocking, so call it
        from a thread (``await asyncio.to_thread(lambda: ctx.embedder)``)."""
        with self._loading:
            if self._embedder is None:
                from ragstream.embedders import load_embedder

                self._embedder = load_embedder(self.settings)
        return self._embedder

    def redis(self) -> Redis:
        """A new Redis client; the caller closes it."""
        if self._redis is not None:
            return self._redis()
        return connect(self.settings)

    def graph_backend(self, kg: KgSettings | None = None) -> CypherBackend:
        """The graph store's backend (Neo4j or FalkorDB) for ``kg`` (default: the settings')."""
        kg = kg or self.settings.kg
        if self._graph_backend is not None:
            return self._graph_backend(kg)
        from ragstream.graph import open_backend

        return open_backend(self.settings, kg)
