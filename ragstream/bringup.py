"""Bring the embedded stack up and down, in one place: ``ragstream up`` and ``ragstream demo``
(with no stack running) both run it, and the CLI only shows what runs.

Up: the services the environment does not point elsewhere (Tansu, FalkorDB, Triton when asked),
every topic and queue, the workers under a supervisor, and (for ``up``) the file that lets other
``ragstream`` commands find this stack. Down, in reverse: drain the workers, then stop the
services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from producers.reembed import reembed_group
from ragstream.config import Settings
from ragstream.stack import embedded_services
from ragstream.supervisor import Supervisor
from ragstream.transport import ensure_topics
from schemas.catalogue import all_topic_names
from workers import consumer_groups


@dataclass
class RunningStack:
    names: list[str]
    env: dict[str, str]  # the RAGSTREAM_* settings that reach the embedded services
    settings: Settings
    supervisor: Supervisor


@contextlib.contextmanager
def running_stack(names: Sequence[str], data_dir: Path, *, triton: bool = False,
                  announce: Path | None = None,
                  say: Callable[[str], None] = print) -> Iterator[RunningStack]:
    """The stack with the workers ``names``, up for the ``with`` block. While it is up, the file
    ``announce`` holds ``{"pid", "env"}``, so that other commands use this stack."""
    with embedded_services(data_dir) as services, _triton(triton, data_dir, services.env, say):
        cfg = Settings.from_env(services.env)
        asyncio.run(ensure_topics(cfg, all_topic_names(), cfg.topic_partitions,
                                  consumer_groups(list(names), cfg.group_id)
                                  | reembed_group(cfg)))
        supervisor = Supervisor(list(names), services.env, data_dir)
        supervisor.start()
        if announce:
            announce.write_text(json.dumps({"pid": os.getpid(), "env": services.env}))
        try:
            yield RunningStack(list(names), services.env, cfg, supervisor)
        finally:
            say("stopping: draining workers, then the stores")
            supervisor.stop(cfg.drain_timeout_s)
            if announce:
                announce.unlink(missing_ok=True)


@contextlib.contextmanager
def _triton(wanted: bool, data_dir: Path, env: dict[str, str], say: Callable[[str], None]):
    """The local Triton for ``up --triton``, unless RAGSTREAM_TRITON_URL points elsewhere."""
    if not wanted or os.environ.get("RAGSTREAM_TRITON_URL"):
        yield None
        return
    from ragstream.triton.server import TritonServer

    say("starting Triton (PyTriton; 10-30 s)")
    server = TritonServer(data_dir)
    server.start()
    env.update(server.worker_env())
    try:
        yield server
    finally:
        server.stop()


class StopSignal:
    """SIGTERM or SIGINT asks a foreground loop to end, so that it stops what it started (a
    drain, not a traceback)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, *_) -> None:
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop is requested."""
        end = time.monotonic() + seconds
        while not self.requested and time.monotonic() < end:
            time.sleep(0.1)
        return self.requested
