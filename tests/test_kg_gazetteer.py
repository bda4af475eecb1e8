"""The gazetteer refresh as beat runs it: a real Celery worker process executes the scheduled task
(sent by its beat entry's name through the Redis broker), the entities get embeddings and a new
gazetteer version, and a running entity-linking worker reloads it and links through it."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from producers.events import document_upserted
from ragstream.publisher import Publisher
from ragstream.celery_app import make_app
from ragstream.graph import KgSettings
from ragstream.schedule import ENTRIES
from ragstream.stack import ManagedProcess
from tests.kg_support import graph, recogniser, wait_for_versions  # noqa: F401  (fixtures)
from workers.entity_linking import EntityLinkingWorker
from tests.helpers import eventually, running

TASK, _ = ENTRIES["kg-gazetteer-refresh"]


async def run_task(settings) -> dict:
    """Send the task the way beat does (by name, to the deployment's queue); wait for its result."""
    result = make_app(settings).send_task(TASK)
    return await asyncio.to_thread(result.get, timeout=180)


async def test_scheduled_refresh_embeds_entities_and_workers_link_through_it(
        env, settings, topics, graph, recogniser, tmp_path: Path):
    kg = KgSettings(gazetteer_poll_s=0.2, gazetteer_min_docs=1)
    celery = ManagedProcess("celery", [sys.executable, "-m", "ragstream", "celery-worker"],
                            tmp_path / "celery.log", env=env)
    celery.start()
    try:
        async with running(EntityLinkingWorker(kg, recogniser), settings) as runtime:
            async with Publisher(settings) as pub:
                await pub.publish([document_upserted(
                    "a", "Angela Merkel met Emmanuel Macron in Berlin on Monday.", version=1)])
            await wait_for_versions(graph, {"a": (1, False)}, 60)
            assert await graph.gazetteer_version() == 0
            missing = await graph.entities_without_embedding(100)
            assert len(missing) >= 3

            first = await run_task(settings)
            assert first == {"embedded": len(missing), "version": 1}, celery.tail()
            assert await graph.entities_without_embedding(100) == []
            entries = await graph.gazetteer(1, 100)
            assert {len(e.embedding) for e in entries} == {384}
            assert await run_task(settings) == {"embedded": 0, "version": 2}  # idempotent

            # the worker polls the version before a batch, at most once per gazetteer_poll_s:
            # wait until its next batch will poll, then it reloads its ruler and links the
            # known name directly
            worker = runtime.worker

            async def poll_due() -> bool:
                return time.monotonic() - worker._gazetteer_checked >= kg.gazetteer_poll_s
            await eventually(poll_due, 5, interval=0.05, message="the gazetteer poll due")
            async with Publisher(settings) as pub:
                await pub.publish([document_upserted(
                    "b", "Angela Merkel spoke in Madrid.", version=1)])
            await wait_for_versions(graph, {"b": (1, False)}, 60)
            assert worker.resolver.gazetteer.version == 2
        rows = await graph.backend.read(
            "MATCH (:Document {id: 'b'})-[m:MENTIONS]->(e:Entity {name: 'Angela Merkel'}) "
            "RETURN e.id, m.method", {})
        (merkel, method), = rows
        assert method == "gazetteer"
        assert [merkel] in await graph.backend.read(
            "MATCH (:Document {id: 'a'})-[:MENTIONS]->(e:Entity) RETURN e.id", {})
    finally:
        celery.stop()
