"""Celery tasks of the GCN refresh. The beat schedule that runs them comes from config
(ragstream.schedule); each holds its per-task lock, and the job holds the graph's refresh lock."""

from __future__ import annotations

import asyncio

from ragstream.celery_app import exclusive_task
from ragstream.config import Settings
from ragstream.gcn.jobs import run_job

INCREMENTAL_TASK = "ragstream.gcn.refresh_incremental"
RETRAIN_TASK = "ragstream.gcn.retrain"


@exclusive_task(INCREMENTAL_TASK)
def refresh_incremental(settings: Settings) -> dict:
    """Re-embed the neighbourhoods of the dirty entities (retrains instead past the drift limit)."""
    return asyncio.run(run_job("incremental", settings)).summary()


@exclusive_task(RETRAIN_TASK)
def retrain(settings: Settings) -> dict:
    """Train a new model on the whole graph and re-embed every entity with it."""
    return asyncio.run(run_job("retrain", settings)).summary()
