"""Build a runtime for a worker on the configured transport, and serve it until SIGTERM, or run
it inside a block of this process (tests and benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator

from ragstream import tracing
from ragstream.config import Settings
from ragstream.runtime import Worker, WorkerRuntime
from ragstream.transport import consumer_factory, make_producer
from ragstream.transport.memory import MemoryBroker, MemoryConsumer, MemoryProducer


def make_runtime(worker: Worker, settings: Settings, *, broker: MemoryBroker | None = None,
                 group_id: str | None = None) -> WorkerRuntime:
    if settings.transport == "memory":
        if broker is None:
            raise ValueError("the memory transport needs a MemoryBroker (it is for tests only)")
        return WorkerRuntime(worker, settings, functools.partial(MemoryConsumer, broker),
                             MemoryProducer(broker), group_id=group_id)
    return WorkerRuntime(worker, settings, consumer_factory(settings), make_producer(settings),
                         group_id=group_id)


async def serve(worker: Worker, settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain: finish the batch, commit, leave the group."""
    tracing.configure_from_env(f"ragstream-{worker.name}")
    runtime = make_runtime(worker, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    await runtime.run()


@contextlib.asynccontextmanager
async def running(worker: Worker, settings: Settings, *, ready_timeout_s: float = 30,
                  **kw) -> AsyncIterator[WorkerRuntime]:
    """Run a worker in this process until the block ends, then drain it as SIGTERM would."""
    runtime = make_runtime(worker, settings, **kw)
    task = asyncio.create_task(runtime.run())
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not runtime.ready:
            if task.done():
                task.result()  # the worker's own error
                raise RuntimeError(f"worker {worker.name} stopped before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {worker.name} not ready within {ready_timeout_s} s")
            await asyncio.sleep(0.05)
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
