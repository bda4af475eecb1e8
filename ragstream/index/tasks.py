"""Celery tasks of the index. The beat schedule that runs them comes with the scheduler."""

from __future__ import annotations

from ragstream.celery_app import exclusive_task
from ragstream.config import Settings
from ragstream.index.compaction import compact

COMPACT_TASK = "ragstream.index.compact"


@exclusive_task(COMPACT_TASK)
def compact_index(settings: Settings) -> dict:
    """Rebuild the hybrid index as a new snapshot version and swap it in."""
    return compact(settings)
