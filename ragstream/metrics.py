"""Prometheus metrics of the worker runtime, and a small /metrics, /healthz and /readyz server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


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
        self.freshness = Histogram("ragstream_event_freshness_seconds",
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
