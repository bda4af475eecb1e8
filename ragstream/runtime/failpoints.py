"""Failpoints: a worker kills itself at a named step of a batch's path, for the chaos harness.

``RAGSTREAM_FAILPOINTS="flushed,published=doc-3|doc-9"`` makes the worker SIGKILL itself at
``flushed`` (sinks written, nothing published) on the first batch that holds two or more records
of one key (on documents.v1, several versions of one document), and at ``published`` on the
first that holds two records keyed ``doc-3`` or two keyed ``doc-9``. The steps, in a batch's
order:

- ``decoded``: the records are read, nothing processed;
- ``flushed``: the sinks are written, no result or dead letter published;
- ``published``: results and dead letters acknowledged, the offsets not committed;
- ``committed``: the offsets committed.

A crash between two of these is what a SIGKILL from outside can only hit by luck. The harness
(testing/chaos.py) restarts the worker without the failpoint that fired, so each fires once.
Unset, as in production, each check is one test of an empty dict.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from collections.abc import Sequence

from ragstream.transport.base import Record

STEPS = ("decoded", "flushed", "published", "committed")
HIT_MESSAGE = "failpoint hit, killing this worker"

log = logging.getLogger(__name__)


def parse(spec: str) -> dict[str, frozenset[bytes] | None]:
    """``step,step=key|key`` to {step: keys, or None for any key}."""
    armed: dict[str, frozenset[bytes] | None] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        step, _, keys = part.partition("=")
        if step not in STEPS:
            raise ValueError(f"failpoint {part!r}: expected one of {STEPS}, or step=key|key")
        armed[step] = frozenset(k.encode() for k in keys.split("|")) if keys else None
    return armed


def render(armed: dict[str, Sequence[str]]) -> str:
    """The inverse of ``parse``, for the harness that sets the variable (no keys: any key)."""
    return ",".join(f"{step}={'|'.join(keys)}" if keys else step
                    for step, keys in armed.items())


_armed = parse(os.environ.get("RAGSTREAM_FAILPOINTS", ""))


def reached(step: str, records: Sequence[Record]) -> None:
    """Kill this process if ``step`` is armed and ``records`` hold two of one (armed) key."""
    if not _armed or step not in _armed:
        return
    keys = _armed[step]
    counts = Counter(r.key for r in records if keys is None or r.key in keys)
    hit = next((k for k, n in counts.items() if n >= 2), None)
    if hit is None:
        return
    log.warning(HIT_MESSAGE, extra={"failpoint": step, "key": hit.decode(errors="replace")})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
