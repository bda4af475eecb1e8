"""Prometheus metrics of the worker runtime, and a small /metrics, /healthz and /readyz server."""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class BulkHistogram(Histogram):
    """A Histogram that also takes a batch of observations in one call: the runtime observes the
    freshness of every event, and ``observe`` per event (a lock and a bucket scan each) was a
    tenth of its per-event cost. Same series, same buckets; test_runtime_unit pins the
    equivalence with ``observe``, since this reaches into the child's buckets."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        """``observe`` each amount; amounts below zero (clock skew) count as zero."""
        if not amounts:
            return
        self._raise_if_not_observable()
        bounds = self._upper_bounds
        self._sum.inc(sum(a for a in amounts if a > 0))
        for i, n in Tally(bisect_left(bounds, a) for a in amounts).items():
            self._buckets[i].inc(n)


class RuntimeMetrics:
    """One registry per worker process; every series is labelled with the worker's name."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        labels = ("worker", "topic")
        self.consumed = Counter("ragstream_events_consumed", "Events consumed", labels, registry=r)
        self.processed = Counter("ragstream_events_processed", "Events processed", labels,
                                 registry=r)
        self.retried = Counter("ragstream_events_retried", "Event processing retries", labels,
                               registry=r)
        self.dead_lettered = Counter("ragstream_events_dead_lettered",
                                     "Events sent to a dead-letter topic",
                                     (*labels, "reason"), registry=r)
        self.emitted = Counter("ragstream_events_emitted", "Events published to result topics",
                               labels, registry=r)
        self.backpressure = Counter("ragstream_backpressure_pauses",
                                    "Times partitions were paused because a sink was unavailable",
                                    ("worker",), registry=r)
        self.batch_size = Histogram("ragstream_batch_size", "Events per consumed batch",
                                    ("worker",), buckets=BATCH_BUCKETS, registry=r)
        self.process_seconds = Histogram("ragstream_batch_process_seconds",
                                         "Time to process and flush one batch", ("worker",),
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.freshness = BulkHistogram("ragstream_event_freshness_seconds",
                                   "Event time to processed (committed) time", labels,
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("ragstream_consumer_lag", "Records behind the partition's end",
                         (*labels, "partition"), registry=r)
        self.assigned = Gauge("ragstream_partitions_assigned", "Partitions assigned",
                              ("worker",), registry=r)

    def preset(self, worker: str, consumes: tuple[str, ...], emits: tuple[str, ...]) -> None:
        """Expose every known series at zero from the start, so that dashboards and alerts see
        0 (not "no data") for a worker that has not yet retried, emitted or been paused."""
        for t in consumes:
            for metric in (self.consumed, self.processed, self.retried, self.freshness):
                metric.labels(worker, t)
        for t in emits:
            self.emitted.labels(worker, t)
        self.backpressure.labels(worker)
        self.batch_size.labels(worker)
        self.process_seconds.labels(worker)
        self.assigned.labels(worker)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_topic_of = itemgetter(0)  # Record.topic, without a Python-level attribute call per record


class WorkerSeries:
    """The runtime's bookkeeping for one worker: each series is bound to its labels once, and
    recorded once per batch (not once per event)."""

    def __init__(self, metrics: RuntimeMetrics, worker: str, consumes: tuple[str, ...],
                 emits: tuple[str, ...]):
        self.metrics, self._worker = metrics, worker
        metrics.preset(worker, consumes, emits)
        self._consumed: dict[str, Counter] = {}
        self._processed: dict[str, Counter] = {}
        self._retried: dict[str, Counter] = {}
        self._emitted: dict[str, Counter] = {}
        self._freshness: dict[str, BulkHistogram] = {}
        self._batch_size = metrics.batch_size.labels(worker)
        self._process_seconds = metrics.process_seconds.labels(worker)
        self._backpressure = metrics.backpressure.labels(worker)
        self._assigned = metrics.assigned.labels(worker)

    def _bound(self, cache: dict, metric, topic: str):
        child = cache.get(topic)
        if child is None:
            child = cache[topic] = metric.labels(self._worker, topic)
        return child

    def consumed(self, records: Sequence) -> None:
        for t, n in Tally(map(_topic_of, records)).items():
            self._bound(self._consumed, self.metrics.consumed, t).inc(n)
        self._batch_size.observe(len(records))

    def retried(self, topic: str, n: int) -> None:
        self._bound(self._retried, self.metrics.retried, topic).inc(n)

    def processed(self, topic: str, ages_s: Sequence[float]) -> None:
        """Events of ``topic`` processed and committed, with their freshness (event time to now)."""
        self._bound(self._processed, self.metrics.processed, topic).inc(len(ages_s))
        self._bound(self._freshness, self.metrics.freshness, topic).observe_many(ages_s)

    def emitted(self, topics: Iterable[str]) -> None:
        for t, n in Tally(topics).items():
            self._bound(self._emitted, self.metrics.emitted, t).inc(n)

    def dead_lettered(self, topic: str, reason: str) -> None:
        self.metrics.dead_lettered.labels(self._worker, topic, reason).inc()

    def batch_seconds(self, seconds: float) -> None:
        self._process_seconds.observe(seconds)

    def backpressure(self) -> None:
        self._backpressure.inc()

    def assigned(self, n: int) -> None:
        self._assigned.set(n)

    def lag(self, topic: str, partition: int, behind: int) -> None:
        self.metrics.lag.labels(self._worker, topic, str(partition)).set(behind)

    def forget_partition(self, topic: str, partition: int) -> None:
        try:
            self.metrics.lag.remove(self._worker, topic, str(partition))
        except KeyError:  # no lag was reported for it yet
            pass


class HealthServer:
    """Serves GET /metrics, /healthz (alive) and /readyz (joined and consuming)."""

    def __init__(self, metrics: RuntimeMetrics, ready: Callable[[], bool], alive: Callable[[], bool],
                 host: str, port: int):
        self._metrics, self._ready, self._alive = metrics, ready, alive
        self._host, self._port = host, port
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if parts and parts[0] != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self._metrics.render()
            elif path in ("/healthz", "/readyz"):
                ok = self._alive() if path == "/healthz" else self._ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", (b"ok\n" if ok else b"not ready\n")
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
            log.debug("health request failed: %s", exc)
        finally:
            writer.close()
