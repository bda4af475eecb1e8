"""The embedding worker's ledger under valid but hostile histories, on a real Redis (FalkorDB):
several versions of one document in a batch whose publish fails, a version reused for other
content, and a document too long to chunk. The worker's own ``process`` and sinks run; the
publish step is the one thing left out, as a failed publish leaves it out."""

from __future__ import annotations

from producers.events import document_upserted
from ragstream.publisher import encode
from ragstream.context import WorkerContext
from ragstream.metrics import RuntimeMetrics
from ragstream.runtime import Batch, Event
from ragstream.transport.base import Record
from schemas.catalogue import decode, topic
from workers.embedding import EmbeddingWorker

A = ("Photosynthesis converts light energy into chemical energy stored in glucose. Chlorophyll "
     "absorbs mostly red and blue light, and the light reactions split water and release oxygen.")
B1 = ("The Calvin cycle fixes carbon dioxide with the enzyme rubisco in the stroma, using the "
      "ATP and NADPH from the light reactions to build three-carbon sugars for the plant.")
B2 = ("Zebrafish regenerate heart muscle after injury through cardiomyocyte division, and "
      "researchers study their fins and hearts to learn why mammalian hearts scar instead.")
C = ("Plants in hot, dry climates use the C4 and CAM pathways to limit photorespiration, and "
     "open their stomata only at night, trading extra energy for better water use efficiency.")


def _events(*docs) -> list[Event]:
    spec = topic("documents.v1")
    out = []
    for offset, (doc_id, version, text) in enumerate(docs):
        message = encode(document_upserted(doc_id, text, version=version))
        out.append(Event(Record("documents.v1", 0, offset, message.key, message.value),
                         decode(spec, message.value, 1 << 20)))
    return out


async def _run(worker: EmbeddingWorker, events: list[Event], flush: bool = True) -> Batch:
    batch = Batch(events, worker.name, worker.sinks)
    await worker.process(batch)
    if flush:
        for sink, items in batch.writes.items():
            await worker.sinks[sink].flush(items)
    return batch


def _upserted(batch: Batch) -> dict[str, str]:
    return {env.data["chunk_id"]: env.data["text"] for _, env in batch.emitted
            if env.type == "ragstream.chunk.embedded"}


async def _worker(settings, minilm, **overrides) -> EmbeddingWorker:
    # 64-token chunks: each paragraph above is one chunk
    settings = settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap_tokens": 8,
                                           **overrides})
    worker = EmbeddingWorker(minilm)
    await worker.setup(WorkerContext(settings, RuntimeMetrics()))
    return worker


async def test_a_replayed_batch_of_two_versions_publishes_every_chunk_of_the_newest(settings,
                                                                                      minilm):
    worker = await _worker(settings, minilm)
    try:
        history = [("plants", 1, f"{A}\n\n{B1}\n\n{C}"), ("plants", 2, f"{A}\n\n{B2}\n\n{C}")]
        first = await _run(worker, _events(*history))  # the ledger is written ...
        assert set(_upserted(first)) == {"plants#0", "plants#1", "plants#2"}
        # ... and the publish fails: the batch is replayed from its first offset. Version 1 is
        # now older than the ledger and skipped; version 2 must still bring every chunk.
        replay = await _run(worker, _events(*history))
        upserted = _upserted(replay)
        assert set(upserted) == {"plants#0", "plants#1", "plants#2"}
        assert B2 in upserted["plants#1"] and A in upserted["plants#0"]
        assert not replay.rejected
    finally:
        await worker.teardown()


async def test_a_reused_version_with_other_text_is_dead_lettered(settings, minilm):
    worker = await _worker(settings, minilm)
    try:
        await _run(worker, _events(("doc", 3, f"{A}\n\n{B1}")))
        reused = await _run(worker, _events(("doc", 3, f"{A}\n\n{B2}")))
        assert [(r.reason, r.event.payload.text) for r in reused.rejected] == [
            ("version_reused", f"{A}\n\n{B2}")]
        assert not reused.emitted and not reused.writes
        replay = await _run(worker, _events(("doc", 3, f"{A}\n\n{B1}")))  # a true replay
        assert not replay.rejected and set(_upserted(replay)) == {"doc#0", "doc#1"}
    finally:
        await worker.teardown()


async def test_a_reused_version_in_its_originals_batch_leaves_the_original_indexed(settings,
                                                                                   minilm):
    """Both carry one event id (a document's id and version make it). Keyed by that id, the
    original was planned with the reused version's chunks, which reached the index under the
    original's content hash (found by the adversarial chaos phase)."""
    worker = await _worker(settings, minilm)
    try:
        original, reused = _events(("doc", 1, f"{A}\n\n{B1}"), ("doc", 1, f"{A}\n\n{B2}"))
        assert original.id == reused.id
        batch = await _run(worker, [original, reused])
        assert [(r.reason, r.event.payload.text) for r in batch.rejected] == [
            ("version_reused", f"{A}\n\n{B2}")]
        upserted = _upserted(batch)
        assert set(upserted) == {"doc#0", "doc#1"} and B1 in upserted["doc#1"]
        assert B2 not in "".join(upserted.values())
    finally:
        await worker.teardown()


async def test_a_document_over_the_chunk_limit_is_refused_before_it_is_windowed(settings,
                                                                                 minilm):
    worker = await _worker(settings, minilm, max_chunks_per_document=20)
    try:
        words = " ".join(["photosynthesis", "zebrafish", "rubisco", "stomata"] * 12_500)
        windowed = []
        cut = worker.chunker._windows
        worker.chunker._windows = lambda text, budget: windowed.append(len(text)) or cut(
            text, budget)
        batch = await _run(worker, _events(("long", 1, words), ("short", 1, A)))
        assert [(r.event.key, r.reason) for r in batch.rejected] == [("long", "too_many_chunks")]
        assert windowed == []  # the token count refused it; no window was cut
        assert set(_upserted(batch)) == {"short#0"}  # its batch-mate goes on
    finally:
        await worker.teardown()
