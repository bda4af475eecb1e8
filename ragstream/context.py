"""What a worker is handed at setup: the settings and the metrics registry."""

from __future__ import annotations

from dataclasses import dataclass

from ragstream.config import Settings
from ragstream.metrics import RuntimeMetrics


@dataclass
class WorkerContext:
    settings: Settings
    metrics: RuntimeMetrics
