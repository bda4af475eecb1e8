"""The gcn_refresh worker over real Kafka (Tansu) and Redis: kg.changes.v1 fills the dirty set
with every entity and both ends of every edge, idempotently."""

from __future__ import annotations

import redis.asyncio

from ragstream.publisher import Publisher
from ragstream.gcn.dirty import DirtySet
from ragstream.graph import KgSettings
from schemas.catalogue import KG_CHANGED
from schemas.envelope import Envelope
from schemas.payloads import KgChanged
from tests.helpers import eventually, processed, running
from workers.gcn_refresh import GcnRefreshWorker


def _change(doc: str, entities: list[str], edges: list[tuple[str, str]]) -> Envelope:
    payload = KgChanged(doc_id=doc, doc_version=1, entities=entities, edges=edges)
    return Envelope(id=f"kg-{doc}", type=KG_CHANGED, source="test", subject=doc,
                    data=payload.model_dump(mode="json"))


async def test_worker_gathers_dirty_entities_idempotently(settings, topics, falkordb):
    changes = [_change("d1", ["a", "b"], [("a", "b")]),
               _change("d2", ["c"], [("c", "x"), ("y", "z")])]
    dirty = DirtySet(redis.asyncio.Redis(port=falkordb.port),
                     KgSettings().graph_name(settings))
    async with running(GcnRefreshWorker(), settings) as runtime:
        async with Publisher(settings) as pub:
            await pub.publish(changes)
            await pub.publish(changes)  # a replay changes nothing

        # the set is full after the first two events already: wait until the replay was read
        async def all_read() -> bool:
            return processed(runtime, "kg.changes.v1") >= 4
        await eventually(all_read, 30, message="4 change events processed")
        assert processed(runtime, "kg.changes.v1") == 4
    assert await dirty.members() == {"a", "b", "c", "x", "y", "z"}
    assert await dirty.size() == 6
    await dirty.client.delete(dirty.key)
    await dirty.client.aclose()
