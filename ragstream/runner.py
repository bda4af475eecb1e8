"""Build a runtime for a worker on the configured transport, and serve it until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import signal

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
