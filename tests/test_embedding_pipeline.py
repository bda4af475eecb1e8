"""documents.v1 -> embedding worker -> chunks.embedded.v1 -> reindex worker -> hybrid index, over
real Tansu and FalkorDB: upsert, update of one paragraph, delete, bad input, replay."""

from __future__ import annotations

import hashlib
import json

from aiokafka import AIOKafkaProducer

from producers.events import document_deleted, document_upserted
from ragstream.publisher import Publisher
from ragstream.vectorstores.search import FusionWeights, Searcher
from ragstream.transport.kafka import connection_options
from tests.helpers import eventually, metric, read_topic
from tests.retrieval_support import (indexed_chunks, log_length, pipeline, settled,
                                     wait_for_chunks)

DENSE = FusionWeights(dense=1, sparse=0)
SPARSE = FusionWeights(dense=0, sparse=1)

INTRO = ("Photosynthesis converts light energy into chemical energy stored in glucose. "
         "Chlorophyll in the thylakoid membranes absorbs mostly red and blue light, and the "
         "light reactions split water and release oxygen as a by-product of the process.")
MIDDLE_V1 = ("The Calvin cycle fixes carbon dioxide with the enzyme rubisco in the stroma. "
             "It uses the ATP and NADPH from the light reactions to build three-carbon sugars, "
             "which the plant turns into sucrose and starch for transport and storage.")
MIDDLE_V2 = ("Zebrafish regenerate heart muscle after injury through cardiomyocyte division. "
             "Researchers study the fins and hearts of these striped fish to understand why "
             "mammalian hearts scar instead of healing, hoping to find regenerative therapies.")
OUTRO = ("Plants in hot, dry climates use the C4 and CAM pathways to limit photorespiration. "
         "They concentrate carbon dioxide around rubisco or open their stomata only at night, "
         "trading extra energy for much better water use efficiency in harsh conditions.")


def _doc(*paragraphs: str) -> str:
    return "\n\n".join(paragraphs)


def _chunks(doc_id: str, *texts: str, title: str = "") -> dict[str, str]:
    """chunk id -> text hash of the chunks a document must become, written out by hand: the
    texts are the chunk boundaries, and each chunk's text starts with the title on its own line.
    (Each paragraph here is 47-54 word pieces: over the 32 floor and under both budgets, so each
    is one chunk; a shorter paragraph joins the one after it.)"""
    head = f"{title}\n" if title else ""
    return {f"{doc_id}#{i}": hashlib.sha256((head + t).encode()).hexdigest()
            for i, t in enumerate(texts)}


def _small_chunks(settings):
    # three paragraphs become three chunks: each is over the 32-token floor and under the budget
    return settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap_tokens": 8})


async def test_upsert_then_query_finds_the_document(settings, topics, redis_client, minilm):
    docs = {
        "plants": ("Photosynthesis", _doc(INTRO, MIDDLE_V1)),
        "fish": ("Zebrafish", MIDDLE_V2),
        "climate": ("C4 plants", OUTRO),
    }
    async with Publisher(settings) as pub:
        await pub.publish(document_upserted(d, text, version=1, title=title)
                          for d, (title, text) in docs.items())
    expected = (_chunks("plants", INTRO, MIDDLE_V1, title="Photosynthesis")
                | _chunks("fish", MIDDLE_V2, title="Zebrafish")
                | _chunks("climate", OUTRO, title="C4 plants"))

    async with pipeline(settings, minilm) as (embedding, reindex):
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
        searcher = Searcher(settings, minilm)
        try:
            for weights in (DENSE, SPARSE, FusionWeights()):
                hits = searcher.search("how do zebrafish hearts regenerate", k=3, weights=weights)
                assert hits[0].doc_id == "fish", weights
                assert "Zebrafish" in hits[0].text and hits[0].chunk_id == "fish#0"
            fused = searcher.search("zebrafish heart regeneration", k=3)
            assert fused[0].dense_rank == 1 and fused[0].sparse_rank == 1
        finally:
            searcher.close()

        # the store's rows show before the flush that wrote them returns to the loop and
        # observes the histogram: in CI this test read the count in between and saw 0
        async def observed() -> bool:
            return freshness() >= len(expected)

        def freshness() -> float:
            return metric(reindex, "ragstream_index_freshness_seconds_count", store="embedded")
        await eventually(observed, 10, message="a freshness sample per chunk")
    assert freshness() == len(expected)


async def test_base64_vectors_index_the_same_float32_values_as_lists(settings, topics,
                                                                    redis_client, minilm):
    """RAGSTREAM_VECTOR_ENCODING=base64: the events carry no float list, the index holds the
    model's exact float32 bytes, and a search finds the document as with lists."""
    settings = settings.model_copy(update={"vector_encoding": "base64"})
    expected = _chunks("fish", MIDDLE_V2, title="Zebrafish")
    async with pipeline(settings, minilm), Publisher(settings) as pub:
        await pub.publish([document_upserted("fish", MIDDLE_V2, version=1, title="Zebrafish")])
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
    [event] = [json.loads(r.value)["data"]
               for r in await read_topic(settings, "chunks.embedded.v1")]
    assert event.get("vector") is None and len(event["vector_base64"]) == 2048  # 384 float32
    stored = redis_client.hget(settings.keys.index_chunk_prefix + "fish#0", "vector")
    assert stored == minilm.embed([f"Zebrafish\n{MIDDLE_V2}"])[0].astype("<f4").tobytes()
    searcher = Searcher(settings, minilm)
    try:
        assert searcher.search("zebrafish heart regeneration", k=1)[0].chunk_id == "fish#0"
    finally:
        searcher.close()


async def test_update_of_one_paragraph_reembeds_only_its_chunk(settings, topics, redis_client,
                                                                minilm):
    settings = _small_chunks(settings)
    v1, v2 = _doc(INTRO, MIDDLE_V1, OUTRO), _doc(INTRO, MIDDLE_V2, OUTRO)
    before, after = _chunks("d", INTRO, MIDDLE_V1, OUTRO), _chunks("d", INTRO, MIDDLE_V2, OUTRO)

    searcher = Searcher(settings, minilm)
    async with pipeline(settings, minilm) as (embedding, _), Publisher(settings) as pub:
        await pub.publish([document_upserted("d", v1, version=1)])
        await wait_for_chunks(redis_client, settings.group_prefix, before)
        assert metric(embedding, "ragstream_embedding_cache_misses_total") == 3
        assert searcher.search("Calvin cycle rubisco stroma", k=1, weights=SPARSE)[0].chunk_id \
            == "d#1"

        await pub.publish([document_upserted("d", v2, version=2)])
        await wait_for_chunks(redis_client, settings.group_prefix, after)
        assert metric(embedding, "ragstream_embedding_cache_misses_total") == 4  # one more
        assert metric(embedding, "ragstream_embedding_cache_hits_total") == 0

        # the old paragraph is gone from both halves of the index, the new one is found
        assert all("Calvin" not in h.text for h in searcher.search("Calvin cycle", k=10))
        assert searcher.search("Calvin cycle NADPH", k=10, weights=SPARSE) == []
        hit = searcher.search("zebrafish cardiomyocyte", k=1)[0]
        assert hit.chunk_id == "d#1" and "Zebrafish" in hit.text
        dense = searcher.search(MIDDLE_V1, k=3, weights=DENSE)
        assert all("Calvin" not in h.text for h in dense)
    searcher.close()


async def test_delete_removes_the_document_from_dense_and_sparse(settings, topics, redis_client,
                                                                 minilm):
    settings = _small_chunks(settings)
    text = _doc(INTRO, MIDDLE_V1, OUTRO)
    searcher = Searcher(settings, minilm)
    async with pipeline(settings, minilm) as (embedding, reindex), Publisher(settings) as pub:
        await pub.publish([document_upserted("gone", text, version=1),
                           document_upserted("kept", MIDDLE_V2, version=1)])
        await wait_for_chunks(redis_client, settings.group_prefix,
                              _chunks("gone", INTRO, MIDDLE_V1, OUTRO) | _chunks("kept", MIDDLE_V2))
        assert {h.doc_id for h in searcher.search("photosynthesis", k=10)} == {"gone", "kept"}

        await pub.publish([document_deleted("gone", version=2)])
        await wait_for_chunks(redis_client, settings.group_prefix, _chunks("kept", MIDDLE_V2))
        assert {h.doc_id for h in searcher.search("photosynthesis chlorophyll", k=10,
                                                  weights=DENSE)} == {"kept"}
        assert searcher.search("photosynthesis chlorophyll rubisco", k=10, weights=SPARSE) == []
        # an older version arriving late (a replay, a reordering) does not bring it back. "gone"
        # and "kept" are keyed to different partitions, so kept's new chunks do not show that
        # gone's event was read: wait until both workers processed everything published
        await pub.publish([document_upserted("gone", text, version=1),
                           document_upserted("kept", OUTRO, version=2)])
        await settled(settings, embedding, reindex, documents=5)
        assert indexed_chunks(redis_client, settings.group_prefix) == _chunks("kept", OUTRO)
    searcher.close()


async def test_corrupt_oversized_and_too_long_documents_go_to_the_dlq(settings, topics,
                                                                       redis_client, minilm):
    settings = settings.model_copy(update={"max_event_bytes": 16384, "max_chunks_per_document": 3})
    long_text = " ".join(f"word{i}" for i in range(2000))  # ~4000 tokens: far over 3 chunks
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait("documents.v1", b"{not json", key=b"corrupt")
        await producer.send_and_wait("documents.v1", json.dumps(document_upserted(
            "huge", "x " * 20_000, version=1).model_dump(mode="json")).encode(), key=b"huge")
        await producer.send_and_wait("documents.v1", json.dumps(document_upserted(
            "long", long_text[:12000], version=1).model_dump(mode="json")).encode(), key=b"long")
        await producer.send_and_wait("documents.v1", json.dumps(document_upserted(
            "fine", MIDDLE_V2, version=1).model_dump(mode="json")).encode(), key=b"fine")
    finally:
        await producer.stop()

    async with pipeline(settings, minilm) as (embedding, reindex):
        # the dead letters come from other partitions than "fine": wait for all four events
        await settled(settings, embedding, reindex, documents=4)
    assert indexed_chunks(redis_client, settings.group_prefix) == _chunks("fine", MIDDLE_V2)
    dead = await read_topic(settings, "documents.v1.dlq")
    reasons = {r.key.decode(): dict(r.headers)["x-error-reason"].decode() for r in dead}
    assert reasons == {"corrupt": "invalid_json", "huge": "oversized", "long": "too_many_chunks"}


async def test_replayed_events_leave_the_index_identical(settings, topics, redis_client, minilm):
    texts = {f"r{i}": _doc(INTRO, f"Document number {i} talks about topic {i}.", OUTRO)
             for i in range(5)}
    async with Publisher(settings) as pub:
        await pub.publish(document_upserted(d, t, version=1) for d, t in texts.items())
        await pub.publish([document_upserted("r0", MIDDLE_V2, version=2),
                           document_deleted("r1", version=2)])
    # the one-line middle paragraph is under the 32-token floor: it joins the paragraph after it
    expected = _chunks("r0", MIDDLE_V2)
    for i in range(2, 5):
        expected |= _chunks(f"r{i}", INTRO,
                            f"Document number {i} talks about topic {i}.\n\n{OUTRO}")
    async with pipeline(settings, minilm) as (embedding, reindex):
        await settled(settings, embedding, reindex, documents=7)
    assert indexed_chunks(redis_client, settings.group_prefix) == expected
    changes = log_length(redis_client, settings.group_prefix)

    # both workers read everything again from the start, under fresh consumer groups
    async with pipeline(settings, minilm, group_suffix=".replay") as (embedding, reindex):
        await settled(settings, embedding, reindex, documents=7)
        assert metric(embedding, "ragstream_embedding_cache_misses_total") == 0
    assert indexed_chunks(redis_client, settings.group_prefix) == expected
    assert log_length(redis_client, settings.group_prefix) == changes


async def test_reembed_forces_every_chunk_through_the_model_again(settings, topics, redis_client,
                                                                   minilm):
    from producers.reembed import reembed

    settings = _small_chunks(settings)
    text = _doc(INTRO, MIDDLE_V1, OUTRO)
    expected = _chunks("d", INTRO, MIDDLE_V1, OUTRO)
    async with pipeline(settings, minilm) as (embedding, reindex), Publisher(settings) as pub:
        await pub.publish([document_upserted("d", text, version=1),
                           document_upserted("x", MIDDLE_V2, version=1),
                           document_deleted("x", version=2)])
        # "x" is keyed apart from "d": its events too must be read before misses is counted
        await settled(settings, embedding, reindex, documents=3)
        assert indexed_chunks(redis_client, settings.group_prefix) == expected
        misses = metric(embedding, "ragstream_embedding_cache_misses_total")

        namespace, sent = await reembed(settings)
        assert (namespace, sent) == (1, 1)  # the deleted document is not re-sent

        await settled(settings, embedding, reindex, documents=4)  # and the re-sent one
        assert metric(embedding, "ragstream_embedding_cache_misses_total") == misses + 3
        assert indexed_chunks(redis_client, settings.group_prefix) == expected
