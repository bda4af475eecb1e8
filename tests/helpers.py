"""Test helpers shared by the suites: real services, worker processes, polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiokafka

from ragstream.config import Settings
from ragstream.runner import make_runtime
from ragstream.runtime import Worker, WorkerRuntime
from ragstream.stack import ManagedProcess, worker_process
from ragstream.transport.base import Record
from ragstream.transport.kafka import connection_options


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.2,
                     message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(worker: Worker, settings: Settings, **kw) -> AsyncIterator[WorkerRuntime]:
    """Run a worker in this process on the configured transport; drain it on exit."""
    runtime = make_runtime(worker, settings, **kw)
    task = asyncio.create_task(runtime.run())
    try:
        await eventually(lambda: _ready(runtime, task), 30, message="worker ready")
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)


async def _ready(runtime: WorkerRuntime, task: asyncio.Task) -> bool:
    if task.done():
        task.result()  # raise the worker's error
    return runtime._ready


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
