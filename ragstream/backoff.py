"""The one backoff formula of the tree: the runtime, the supervisor and the Triton dispatcher use it."""

from __future__ import annotations

import math


def backoff_s(attempt: int, base_s: float, cap_s: float = math.inf) -> float:
    """Exponential: ``base_s`` after the first failure, doubling per failure, at most ``cap_s``.

    Kept by hand rather than tenacity's ``wait_exponential``: the runtime's waits are not a retry
    loop around one call (backpressure pauses partitions and keeps polling; the supervisor
    schedules restarts), so only the formula is shared, and it is one line."""
    return min(base_s * 2 ** (attempt - 1), cap_s)
