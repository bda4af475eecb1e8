"""Search's two caches, both bounded, both counted (ragstream.serving.metrics).

``QueryVectors``: a query's vector by model id, cache namespace and sha256 of its text, the
document cache's scheme (workers/embedding.py) under a sibling key family
(``Keys.query_embedding_cache``). A per-process LRU answers repeats without a round trip; Redis,
with a TTL, shares vectors between gateway replicas and restarts. Query vectors live apart from
chunk vectors because they are computed the fast way (``embed_query``, unpadded), and a chunk's
stored vector must replay bit for bit (docs/reliability.md). ``ragstream reembed`` bumps the
namespace: this cache reads it at most once a second, so it follows within a second.

``ResultCache``: a search's hits keyed by the store, the store's generation
(``ChunkStore.generation``), the query and every parameter that shapes the answer. Any change to
the store changes its generation, so the next identical query misses: the cache is never staler
than the store. Entries of an old generation can never hit again; they are dropped as soon as a
new one is seen.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import redis

from ragstream.embedders import Embedder
from ragstream.serving.metrics import ServingMetrics
from ragstream.stores.keys import Keys

log = logging.getLogger(__name__)


class Lru:
    """A thread-safe LRU bounded by entries and by a total of sizes the caller gives, with a
    time to live per entry."""

    def __init__(self, max_entries: int, max_size: float = float("inf"),
                 ttl_s: float = float("inf")):
        self.max_entries, self.max_size, self.ttl_s = max_entries, max_size, ttl_s
        self._items: OrderedDict[Hashable, tuple[float, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return item[2]

    def put(self, key: Hashable, value: Any, size: float = 1.0) -> None:
        if self.max_entries <= 0 or size > self.max_size:
            return
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (time.monotonic() + self.ttl_s, size, value)
            self.size += size
            while len(self._items) > self.max_entries or self.size > self.max_size:
                self._drop(next(iter(self._items)))

    def discard_where(self, doomed: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if doomed(k)]:
                self._drop(key)

    def _drop(self, key: Hashable) -> None:
        self.size -= self._items.pop(key)[1]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class QueryVectors:
    NAMESPACE_POLL_S = 1.0

    def __init__(self, client: redis.Redis, keys: Keys, embedder: Embedder, entries: int,
                 ttl_s: int, metrics: ServingMetrics):
        self._redis, self._keys, self._embedder = client, keys, embedder
        self._ttl_s = ttl_s
        self._local = Lru(entries)
        self._metrics = metrics
        self._namespace: tuple[float, str] | None = None  # (read at, namespace)

    def vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """A unit vector per text, in order; the texts no cache holds are embedded in one call."""
        embedding = self._embedding()
        hashes = [text_hash(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for h in dict.fromkeys(hashes):
            if (vector := self._local.get((embedding, h))) is not None:
                found[h] = vector
        self._metrics.query_vector_hits.labels("process").inc(len(found))
        wanted = [h for h in dict.fromkeys(hashes) if h not in found]
        if wanted:
            shared = self._read(embedding, wanted)
            self._metrics.query_vector_hits.labels("redis").inc(len(shared))
            found |= shared
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in found}
        if missing:
            self._metrics.query_vector_misses.inc(len(missing))
            computed = self._embed(list(missing.values()))
            made = dict(zip(missing, computed, strict=True))
            self._write(embedding, made)
            found |= made
        for h in wanted:
            self._local.put((embedding, h), found[h])
        return [found[h] for h in hashes]

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        if len(texts) == 1:
            return [self._embedder.embed_query(texts[0])]
        return list(self._embedder.embed_queries(texts))  # many: one call

    def _embedding(self) -> str:
        """``<model id>:<cache namespace>``, the namespace read at most once a second."""
        now = time.monotonic()
        if self._namespace is None or now - self._namespace[0] > self.NAMESPACE_POLL_S:
            try:
                namespace = str(int(self._redis.get(self._keys.embedding_namespace) or 0))
            except redis.RedisError as exc:
                self._failed("read the namespace", exc)
                namespace = self._namespace[1] if self._namespace else "0"
            self._namespace = (now, namespace)
        return f"{self._embedder.model_id}:{self._namespace[1]}"

    def _read(self, embedding: str, hashes: list[str]) -> dict[str, np.ndarray]:
        try:
            values = self._redis.mget([self._keys.query_embedding_cache(embedding, h)
                                       for h in hashes])
        except redis.RedisError as exc:
            self._failed("read", exc)
            return {}
        return {h: np.frombuffer(v, dtype=np.float32)
                for h, v in zip(hashes, values, strict=True) if v is not None}

    def _write(self, embedding: str, vectors: dict[str, np.ndarray]) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for h, vector in vectors.items():
                    pipe.set(self._keys.query_embedding_cache(embedding, h),
                             np.asarray(vector, dtype=np.float32).tobytes(), ex=self._ttl_s)
                pipe.execute()
        except redis.RedisError as exc:
            self._failed("write", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        # the cache is an optimisation: a search goes on without it, counted and logged
        self._metrics.query_vector_errors.inc()
        log.warning("query vector cache unavailable", extra={"action": what,
                                                             "error": repr(exc)[:300]})


class ResultCache:
    # per entry, on top of the hits' texts: the key, the hit records, their metadata
    ENTRY_OVERHEAD_BYTES = 512

    def __init__(self, entries: int, mb: float, ttl_s: float, metrics: ServingMetrics):
        self._lru = Lru(entries, mb * 1024 * 1024, ttl_s)
        self._metrics = metrics
        self._generations: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, store: str, generation: str, request: Hashable) -> Any | None:
        self._forget_older(store, generation)
        value = self._lru.get((store, generation, request))
        (self._metrics.result_misses if value is None else self._metrics.result_hits
         ).labels(store).inc()
        return value

    def put(self, store: str, generation: str, request: Hashable, value: Any,
            text_bytes: int) -> None:
        self._lru.put((store, generation, request), value, text_bytes + self.ENTRY_OVERHEAD_BYTES)
        self._metrics.result_entries.set(len(self._lru))
        self._metrics.result_bytes.set(self._lru.size)

    def _forget_older(self, store: str, generation: str) -> None:
        with self._lock:
            if self._generations.get(store) == generation:
                return
            self._generations[store] = generation
        self._lru.discard_where(lambda key: key[0] == store and key[1] != generation)
