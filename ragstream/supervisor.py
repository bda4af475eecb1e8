"""Keeps the stack's worker processes running and reads their status from /metrics."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ragstream.backoff import backoff_s
from ragstream.stack import ManagedProcess, free_port, worker_process


@dataclass
class WorkerStatus:
    name: str
    pid: int | None
    state: str
    restarts: int
    consumed: float = 0.0
    processed: float = 0.0
    dead_lettered: float = 0.0
    lag: float = 0.0
    events_per_s: float = 0.0


def scrape(port: int, timeout: float = 1.0) -> dict[str, float]:
    """Sum each ragstream series of a worker's /metrics over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ragstream_"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass
class SupervisedWorker:
    name: str
    process: ManagedProcess
    metrics_port: int
    restarts: int = 0
    next_restart: float | None = None
    last_sample: tuple[float, float] | None = None  # (monotonic time, consumed)
    status: WorkerStatus | None = None


@dataclass
class Supervisor:
    """Starts each worker, restarts one that dies (with backoff), and stops all with a drain."""

    names: list[str]
    env: dict[str, str]
    data_dir: Path
    workers: list[SupervisedWorker] = field(default_factory=list)

    def start(self) -> None:
        for name in self.names:
            port = free_port()
            env = {**self.env, "RAGSTREAM_METRICS_PORT": str(port)}
            proc = worker_process(name, env, self.data_dir)
            proc.start()
            self.workers.append(SupervisedWorker(name, proc, port))

    def poll(self) -> list[WorkerStatus]:
        now = time.monotonic()
        out = []
        for w in self.workers:
            if not w.process.alive():
                if w.next_restart is None:
                    w.next_restart = now + backoff_s(w.restarts + 1, 1.0, 30.0)
                elif now >= w.next_restart:
                    w.restarts += 1
                    w.next_restart = None
                    w.process.start()
            out.append(self._status(w, now))
        return out

    def _status(self, w: SupervisedWorker, now: float) -> WorkerStatus:
        alive = w.process.alive()
        status = WorkerStatus(w.name, w.process.pid if alive else None,
                              "running" if alive else "restarting", w.restarts)
        if alive:
            try:
                m = scrape(w.metrics_port)
            except OSError:
                status.state = "starting"
                return status
            status.consumed = m.get("ragstream_events_consumed_total", 0.0)
            status.processed = m.get("ragstream_events_processed_total", 0.0)
            status.dead_lettered = m.get("ragstream_events_dead_lettered_total", 0.0)
            status.lag = m.get("ragstream_consumer_lag", 0.0)
            if w.last_sample is not None and now > w.last_sample[0]:
                status.events_per_s = max(status.consumed - w.last_sample[1], 0) / (
                    now - w.last_sample[0])
            w.last_sample = (now, status.consumed)
        w.status = status
        return status

    def stop(self, timeout: float) -> None:
        for w in self.workers:
            w.process.signal(15)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.process.stop(max(deadline - time.monotonic(), 0.1))
