"""Noop: consumes documents and does nothing. It measures the runtime's own cost (bench/)."""

from __future__ import annotations

from ragstream.runtime import Batch, Worker


class NoopWorker(Worker):
    name = "noop"
    consumes = ("documents.v1",)

    async def process(self, batch: Batch) -> None:
        return None
