"""A result too large to send dead-letters the event it came from, on a real broker (Tansu), and
the worker goes on: over the event limit (the runtime's own check), or refused by the producer's
request limit (MessageSizeTooLarge, what a broker configured below the event limit answers).

Before, the first result went out and every reader dead-lettered it as ``oversized``; the second
crashed the worker, and each restart replayed the event and crashed again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

from producers.events import document_upserted
from ragstream.config import Settings
from ragstream.publisher import Publisher
from ragstream.runner import running
from ragstream.runtime import Batch, Worker, WorkerContext, WorkerRuntime
from ragstream.transport import consumer_factory
from ragstream.transport.kafka import KafkaProducer
from schemas.catalogue import CHUNK_EMBEDDED
from schemas.payloads import ChunkEmbedded
from tests.helpers import eventually, read_topic


class Doubler(Worker):
    """Emits one chunk per document holding the document's text twice: a result bigger than
    its cause."""

    name = "doubler"
    consumes = ("documents.v1",)
    emits = ("chunks.embedded.v1",)

    async def setup(self, ctx: WorkerContext) -> None:
        self.sinks = {}

    async def process(self, batch: Batch) -> None:
        for event in batch.events:
            doc = event.payload
            text = doc.text * 2
            batch.emit("chunks.embedded.v1", CHUNK_EMBEDDED, ChunkEmbedded(
                chunk_id=f"{doc.doc_id}#0", doc_id=doc.doc_id, doc_version=doc.version,
                position=0, text=text, text_hash=hashlib.sha256(text.encode()).hexdigest(),
                model_id="doubler", vector=[1.0]), cause=event)


async def _dead_letters(settings: Settings, n: int) -> list:
    found: list = []

    async def arrived() -> bool:
        found[:] = await read_topic(settings, "documents.v1.dlq", timeout=0.5)
        return len(found) >= n
    await eventually(arrived, 60, message=f"{n} dead letter(s)")
    return found


async def _results(settings: Settings, n: int) -> list:
    found: list = []

    async def arrived() -> bool:
        found[:] = await read_topic(settings, "chunks.embedded.v1", timeout=0.5)
        return len(found) >= n
    await eventually(arrived, 60, message=f"{n} result(s)")
    return found


def _subjects(records) -> list[str]:
    return sorted(json.loads(r.value)["subject"] for r in records)


async def _offset_of(settings: Settings, doc_id: str) -> tuple[int, int]:
    for r in await read_topic(settings, "documents.v1", timeout=0.5):
        if json.loads(r.value)["subject"] == doc_id:
            return r.partition, r.offset
    raise AssertionError(f"{doc_id} is not on documents.v1")


def _check_dead_letter(letter, where: tuple[int, int], says: str) -> None:
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["x-error-reason"] == "result_too_large", headers
    assert headers["x-stage"] == "publish" and headers["x-worker"] == "doubler"
    assert says in headers["x-error-message"], headers["x-error-message"]
    assert (int(headers["x-original-partition"]), int(headers["x-original-offset"])) == where
    assert headers["x-original-topic"] == "documents.v1"


async def test_a_result_over_the_event_limit_dead_letters_its_cause(settings, topics):
    settings = settings.model_copy(update={"max_event_bytes": 4096})
    small = [document_upserted(f"small-{i}", f"text {i}", version=1) for i in range(5)]
    big = document_upserted("big", "y" * 3000, version=1)  # 3 kB in, about 6 kB out
    async with Publisher(settings) as pub:
        await pub.publish([*small[:3], big, *small[3:]])
    async with running(Doubler(), settings):
        (letter,) = await _dead_letters(settings, 1)
        results = await _results(settings, 5)
        after = document_upserted("after", "text", version=1)  # the partition goes on
        async with Publisher(settings) as pub:
            await pub.publish([after])
        results = await _results(settings, 6)
    _check_dead_letter(letter, await _offset_of(settings, "big"),
                       "over the 4096-byte event limit")
    assert json.loads(letter.value)["subject"] == "big"  # the cause, unchanged
    assert _subjects(results) == sorted([e.subject for e in small] + ["after"])
    assert max(len(r.value) for r in results) <= 4096


async def test_a_result_the_producer_refuses_as_too_large_dead_letters_its_cause(
        settings, topics):
    # the workers take 4 MiB events; the producer (the broker's limit) takes 1 MiB messages
    settings = settings.model_copy(update={"max_event_bytes": 4 << 20})
    narrow = KafkaProducer(settings.model_copy(update={"max_event_bytes": 256 << 10}))
    big = document_upserted("big", "y" * 700_000, version=1)  # 700 kB in, 1.4 MB out
    small = [document_upserted(f"small-{i}", f"text {i}", version=1) for i in range(3)]
    async with Publisher(settings) as pub:
        await pub.publish([small[0], big, *small[1:]])
    runtime = WorkerRuntime(Doubler(), settings, consumer_factory(settings), narrow,
                            group_id=settings.group_id(f"doubler-{uuid.uuid4().hex[:6]}"))
    task = asyncio.create_task(runtime.run())
    try:
        (letter,) = await _dead_letters(settings, 1)
        results = await _results(settings, 3)
        assert not task.done(), "the worker stopped"
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)  # and it stops cleanly: no error kept for later
    _check_dead_letter(letter, await _offset_of(settings, "big"), "refused by the broker")
    # what the refused send had sent already goes again, one by one: at least once, same ids
    assert sorted(set(_subjects(results))) == sorted(e.subject for e in small)
    assert len({json.loads(r.value)["id"] for r in results}) == len(small)
