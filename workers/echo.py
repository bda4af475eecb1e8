"""Echo: a diagnostics worker. It records every document event once in a Redis ledger and
publishes a receipt for it, proving the whole path (consume, sink, publish, commit) end to end."""

from __future__ import annotations

from ragstream.runtime import Batch, Sink, Worker, WorkerContext
from ragstream.stores.redis import connect
from schemas.catalogue import ECHO_RECEIPT
from schemas.payloads import EchoReceipt

# Record each event id once; count first-time applications (effects) and all deliveries apart,
# so a replay shows up as deliveries > effects while effects stay exact.
_APPLY = """
local applied = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then applied = applied + 1 end
end
redis.call('INCRBY', KEYS[2], applied)
redis.call('INCRBY', KEYS[3], #ARGV / 2)
return applied
"""


class LedgerSink(Sink):
    def __init__(self, client, prefix: str):
        self.keys = [f"{prefix}:ledger", f"{prefix}:effects", f"{prefix}:deliveries"]
        self._apply = client.register_script(_APPLY)

    async def flush(self, items: list[tuple[str, str]]) -> None:
        args = [x for pair in items for x in pair]
        await self._apply(keys=self.keys, args=args)


class EchoWorker(Worker):
    name = "echo"
    consumes = ("documents.v1",)
    emits = ("echo.v1",)

    async def setup(self, ctx: WorkerContext) -> None:
        self._redis = connect(ctx.settings)
        self.sinks = {"ledger": LedgerSink(self._redis, f"{ctx.settings.group_prefix}:echo")}

    async def process(self, batch: Batch) -> None:
        for event in batch.events:
            r = event.record
            batch.write("ledger", (event.id, f"{r.topic}:{r.partition}:{r.offset}"))
            batch.emit("echo.v1", ECHO_RECEIPT, EchoReceipt(
                source_event_id=event.id, source_type=event.type, topic=r.topic,
                partition=r.partition, offset=r.offset, subject=event.key), cause=event)

    async def teardown(self) -> None:
        await self._redis.aclose()
