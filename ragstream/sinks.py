"""What a worker writes to: a store the runtime flushes after ``process``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Sink(ABC):
    """A store the runtime flushes after ``process``. ``flush`` must be idempotent: a replayed
    batch flushes the same items again and must change nothing."""

    @abstractmethod
    async def flush(self, items: list[Any]) -> None: ...
