"""Test helpers shared by the suites: real services, worker processes, polling."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiokafka

from ragstream.config import Settings
from ragstream.runner import running  # noqa: F401  (the suites import it from here)
from ragstream.stack import ManagedProcess, worker_process
from ragstream.transport.base import Record
from ragstream.transport.kafka import connection_options


@contextlib.contextmanager
def json_logs(name: str) -> Iterator[io.StringIO]:
    """What logger ``name`` writes through ragstream's JSON formatter, while the block runs."""
    from ragstream import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.2,
                     message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


def metric(runtime, name: str, **labels: str) -> float:
    """A metric sample's value from a runtime's registry (0 when not yet observed)."""
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def processed(runtime, topic: str) -> float:
    return metric(runtime, "ragstream_events_processed_total", worker=runtime.worker.name,
                  topic=topic)


def handled(runtime, topic: str) -> float:
    """Events of ``topic`` the runtime is done with: processed or dead-lettered, and committed
    (the runtime counts both only after the commit)."""
    dead = sum(s.value for family in runtime.metrics.registry.collect()
               if family.name == "ragstream_events_dead_lettered"
               for s in family.samples
               if s.name.endswith("_total") and s.labels["topic"] == topic
               and s.labels["worker"] == runtime.worker.name)
    return processed(runtime, topic) + dead


def start_worker(name: str, env: dict[str, str], data_dir: Path, tag: str = "") -> ManagedProcess:
    proc = worker_process(name, env, data_dir, log_name=f"{name}{tag}")
    proc.start()
    return proc


async def read_topic(settings: Settings, topic: str, timeout: float = 2.0) -> list[Record]:
    """Everything a topic holds now, from every partition."""
    consumer = aiokafka.AIOKafkaConsumer(topic, **connection_options(settings), group_id=None,
                                         auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Record] = []
    try:
        idle_until = time.monotonic() + timeout
        while time.monotonic() < idle_until:
            batches = await consumer.getmany(timeout_ms=300)
            for msgs in batches.values():
                out += [Record(m.topic, m.partition, m.offset, m.key, m.value or b"",
                               list(m.headers or ()), m.timestamp) for m in msgs]
                idle_until = time.monotonic() + timeout
    finally:
        await consumer.stop()
    return out


class Tap:
    """Everything published to a topic, on either transport. Kafka keeps its log, so reading it
    later suffices; RabbitMQ keeps only what a bound queue caught, so bind one before publishing."""

    def __init__(self, settings: Settings, topic: str):
        self.settings, self.topic = settings, topic
        self._queue = None
        if settings.transport == "rabbitmq":
            import kombu

            from ragstream.transport.rabbitmq import tap_queue

            self._queue = tap_queue(settings, topic, "test")
            with kombu.Connection(settings.rabbitmq_url.get_secret_value()) as conn:
                self._queue.bind(conn.default_channel).declare()
        self._seen: list[Record] = []

    async def read(self, timeout: float = 2.0) -> list[Record]:
        if self._queue is None:
            return await read_topic(self.settings, self.topic, timeout)
        return await asyncio.to_thread(self._drain, timeout)

    def _drain(self, timeout: float) -> list[Record]:
        import kombu

        from ragstream.transport.rabbitmq import _record

        with kombu.Connection(self.settings.rabbitmq_url.get_secret_value()) as conn:
            queue = self._queue.bind(conn.default_channel)
            idle_until = time.monotonic() + timeout
            while time.monotonic() < idle_until:
                message = queue.get(no_ack=True, accept=None)
                if message is None:
                    time.sleep(0.05)
                    continue
                self._seen.append(_record(message, self.topic))
                idle_until = time.monotonic() + timeout
        return list(self._seen)


def delete_rabbitmq_namespace(settings: Settings, *prefixes: str) -> None:
    """Remove a test's queues and exchanges, so nothing piles up in the shared broker."""
    import subprocess

    import kombu

    listed = subprocess.run(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
                            capture_output=True, text=True, timeout=60).stdout.split()
    listed_ex = subprocess.run(["rabbitmqctl", "list_exchanges", "-q", "--no-table-headers",
                                "name"], capture_output=True, text=True, timeout=60).stdout.split()
    with kombu.Connection(settings.rabbitmq_url.get_secret_value()) as conn:
        channel = conn.default_channel
        for name in listed:
            if name.startswith(prefixes):
                channel.queue_delete(name)
        for name in listed_ex:
            if name.startswith(prefixes):
                channel.exchange_delete(name)
