"""documents.v1 -> embedding worker -> chunks.embedded.v1 -> reindex worker -> hybrid index, over
real Tansu and FalkorDB: upsert, update of one paragraph, delete, bad input, replay."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaProducer

from producers.events import document_deleted, document_upserted
from ragstream.publisher import Publisher
from ragstream.chunking import Chunker
from ragstream.vectorstores.search import FusionWeights, Searcher
from ragstream.transport.kafka import connection_options
from tests.helpers import eventually, read_topic
from tests.retrieval_support import (indexed_chunks, log_length, metric, pipeline, processed,
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


def _expected(settings, minilm, doc_id: str, text: str, title: str = "") -> dict[str, str]:
    chunker = Chunker(minilm.model.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    return {c.chunk_id: c.text_hash for c in chunker.split(doc_id, text, title)}


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
    expected = {}
    for d, (title, text) in docs.items():
        expected |= _expected(settings, minilm, d, text, title)

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
        freshness = metric(reindex, "ragstream_index_freshness_seconds_count", store="embedded")
    assert freshness == len(expected)


async def test_update_of_one_paragraph_reembeds_only_its_chunk(settings, topics, redis_client,
                                                                minilm):
    settings = _small_chunks(settings)
    v1, v2 = _doc(INTRO, MIDDLE_V1, OUTRO), _doc(INTRO, MIDDLE_V2, OUTRO)
    before, after = _expected(settings, minilm, "d", v1), _expected(settings, minilm, "d", v2)
    assert len(before) == 3 and sum(before[c] != after[c] for c in before) == 1

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
    async with pipeline(settings, minilm), Publisher(settings) as pub:
        await pub.publish([document_upserted("gone", text, version=1),
                           document_upserted("kept", MIDDLE_V2, version=1)])
        expected = _expected(settings, minilm, "gone", text) | _expected(settings, minilm, "kept",
                                                                         MIDDLE_V2)
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
        assert {h.doc_id for h in searcher.search("photosynthesis", k=10)} == {"gone", "kept"}

        await pub.publish([document_deleted("gone", version=2)])
        await wait_for_chunks(redis_client, settings.group_prefix,
                              _expected(settings, minilm, "kept", MIDDLE_V2))
        assert {h.doc_id for h in searcher.search("photosynthesis chlorophyll", k=10,
                                                  weights=DENSE)} == {"kept"}
        assert searcher.search("photosynthesis chlorophyll rubisco", k=10, weights=SPARSE) == []
        # an older version arriving late (a replay, a reordering) does not bring it back
        await pub.publish([document_upserted("gone", text, version=1),
                           document_upserted("kept", OUTRO, version=2)])
        await wait_for_chunks(redis_client, settings.group_prefix,
                              _expected(settings, minilm, "kept", OUTRO))
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

    async with pipeline(settings, minilm):
        await wait_for_chunks(redis_client, settings.group_prefix,
                              _expected(settings, minilm, "fine", MIDDLE_V2))
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
    expected = {}
    for d, t in texts.items():
        if d != "r1":
            expected |= _expected(settings, minilm, d, MIDDLE_V2 if d == "r0" else t)
    async with pipeline(settings, minilm):
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
    state = indexed_chunks(redis_client, settings.group_prefix)
    changes = log_length(redis_client, settings.group_prefix)

    # both workers read everything again from the start, under fresh consumer groups
    async with pipeline(settings, minilm, group_suffix=".replay") as (embedding, reindex):
        async def embedding_replayed() -> bool:
            return processed(embedding, "documents.v1") == 7
        await eventually(embedding_replayed, 60, message="documents replayed")
        published = len(await read_topic(settings, "chunks.embedded.v1", timeout=1))

        async def reindex_replayed() -> bool:
            return processed(reindex, "chunks.embedded.v1") == published
        await eventually(reindex_replayed, 60, message="chunk events replayed")
        assert metric(embedding, "ragstream_embedding_cache_misses_total") == 0
    assert indexed_chunks(redis_client, settings.group_prefix) == state
    assert log_length(redis_client, settings.group_prefix) == changes


async def test_reembed_forces_every_chunk_through_the_model_again(settings, topics, redis_client,
                                                                   minilm):
    from producers.reembed import reembed

    settings = _small_chunks(settings)
    text = _doc(INTRO, MIDDLE_V1, OUTRO)
    expected = _expected(settings, minilm, "d", text)
    async with pipeline(settings, minilm) as (embedding, _), Publisher(settings) as pub:
        await pub.publish([document_upserted("d", text, version=1),
                           document_upserted("x", MIDDLE_V2, version=1),
                           document_deleted("x", version=2)])
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
        misses = metric(embedding, "ragstream_embedding_cache_misses_total")

        namespace, sent = await reembed(settings)
        assert (namespace, sent) == (1, 1)  # the deleted document is not re-sent

        async def reembedded() -> bool:
            return metric(embedding, "ragstream_embedding_cache_misses_total") == misses + 3
        await eventually(reembedded, 60, message="every chunk embedded again")
        await wait_for_chunks(redis_client, settings.group_prefix, expected)
