"""The echo worker, except that the event keyed "poison" kills its process outright (as a
segfault or the OOM killer would), so no runtime code can dead-letter it: only the broker's own
delivery limit can stop it crashing each worker that takes it. Run by tests/test_rabbitmq.py as
``python -m tests.poison_worker`` with the test's RAGSTREAM_* environment."""

from __future__ import annotations

import asyncio
import os

from ragstream.config import Settings
from ragstream.runner import serve
from workers.echo import EchoWorker

POISON = "poison"


class CrashesOnPoison(EchoWorker):
    async def process(self, batch) -> None:
        if any(event.key == POISON for event in batch.events):
            os._exit(3)
        await super().process(batch)


if __name__ == "__main__":
    asyncio.run(serve(CrashesOnPoison(), Settings()))
