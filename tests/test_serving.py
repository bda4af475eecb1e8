"""Serving search (ragstream.serving through ``Searcher``) on real Redis, a real store and the real
MiniLM: batches embedded in one call, the query-vector cache, a result cache that is never staler
than the store (an update through the whole pipeline, then the same query), and the re-ranking
stage with a real cross-encoder, its budget and its fallbacks."""

from __future__ import annotations

import contextlib
import hashlib
import time

import numpy as np
import pytest

from producers.events import document_deleted, document_upserted
from ragstream.config import Settings
from ragstream.publisher import Publisher
from ragstream.serving import Serving
from ragstream.serving.caches import Lru
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import Filter
from ragstream.vectorstores.search import FusionWeights, SearchRequest, Searcher
from testing.cross_encoder import build_standin
from tests.retrieval_support import pipeline, wait_for_chunks
from tests.serving_support import BACKENDS, DOCS, QUERIES, TOP, fill


class CountingEmbedder:
    """The real embedder, with a record of each model call (a spy, not a stand-in)."""

    def __init__(self, embedder):
        self._embedder = embedder
        self.model_id, self.dimension = embedder.model_id, embedder.dimension
        self.calls: list[tuple[str, int]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(("embed", len(texts)))
        return self._embedder.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        self.calls.append(("embed_query", 1))
        return self._embedder.embed_query(text)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        self.calls.append(("embed_queries", len(texts)))
        return self._embedder.embed_queries(texts)


def sample(serving: Serving, name: str, **labels: str) -> float:
    return serving.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return build_standin(tmp_path_factory.mktemp("cross-encoder") / "model")


@pytest.fixture
def filled(settings, minilm) -> Settings:
    fill(settings, minilm, DOCS)
    return settings


@pytest.fixture(params=BACKENDS)
def filled_store(request, env, minilm) -> Settings:
    """The documents in each store backend, searched through the store interface only."""
    settings = Settings.from_env(env, store_search=request.param)
    fill(settings, minilm, DOCS)
    yield settings
    open_store(settings).drop()


def test_a_batch_is_embedded_in_one_model_call_and_answers_as_single_searches_do(filled_store,
                                                                                 minilm):
    filled = filled_store
    spy = CountingEmbedder(minilm)
    batch = Searcher(filled, spy)
    keyword_only = SearchRequest("neutron stars", k=2, weights=FusionWeights(dense=0, sparse=1))
    requests = [SearchRequest(q, k=3) for q in QUERIES] + [
        SearchRequest(QUERIES[0], k=3), keyword_only]
    try:
        results = batch.search_many(requests)
    finally:
        batch.close()
    # every distinct dense query in one call; the keyword-only one needs no vector
    assert spy.calls == [("embed_queries", len(QUERIES))]
    assert not any(r.cached for r in results)
    assert [r.hits[0].doc_id for r in results] == [*TOP, "fish", "stars"]
    single = Searcher(Settings.from_env({}, **_env(filled), serving_result_cache_entries=0),
                      minilm)
    try:
        for request, result in zip(requests, results, strict=True):
            alone = single.search(request.query, request.k, request.weights)
            assert [h.chunk_id for h in alone] == [h.chunk_id for h in result.hits]
            assert [h.score for h in alone] == pytest.approx([h.score for h in result.hits])
    finally:
        single.close()
    with contextlib.closing(Searcher(filled, minilm)) as searcher, \
            pytest.raises(ValueError, match="at most"):
        searcher.search_many([SearchRequest("q")] * 65)


def _env(settings: Settings) -> dict[str, str]:
    return {"redis_url": settings.redis_url.get_secret_value(), "data_dir": str(settings.data_dir),
            "group_prefix": settings.group_prefix, "store_search": settings.store.search}


def test_query_vectors_come_from_this_process_then_from_redis_and_follow_the_namespace(
        settings, minilm, redis_client):
    spy = CountingEmbedder(minilm)
    first = Serving(settings, spy)
    vectors = first.query_vectors.vectors(["alpha helix", "beta sheet", "alpha helix"])
    assert spy.calls == [("embed_queries", 2)]
    assert np.allclose(vectors[0], minilm.embed_query("alpha helix"), atol=1e-6)
    assert np.array_equal(vectors[0], vectors[2])
    first.query_vectors.vectors(["alpha helix", "beta sheet"])
    assert spy.calls == [("embed_queries", 2)]
    # per distinct text: the repeat inside the first batch was embedded once, not counted twice
    assert sample(first, "ragstream_query_vector_cache_hits_total", layer="process") == 2
    assert sample(first, "ragstream_query_vector_cache_misses_total") == 2

    second = Serving(settings, spy)  # another process: Redis has them
    assert np.array_equal(second.query_vectors.vectors(["beta sheet"])[0], vectors[1])
    assert spy.calls == [("embed_queries", 2)]
    assert sample(second, "ragstream_query_vector_cache_hits_total", layer="redis") == 1
    key = settings.keys.query_embedding_cache(f"{minilm.model_id}:0",
                                              hashlib.sha256(b"beta sheet").hexdigest())
    assert 0 < redis_client.ttl(key) <= settings.serving.query_vectors_ttl_s

    # `ragstream reembed` bumps the namespace: the cached vectors are no longer used
    redis_client.incr(settings.keys.embedding_namespace)
    second.query_vectors.NAMESPACE_POLL_S = 0
    second.query_vectors.vectors(["beta sheet"])
    assert spy.calls == [("embed_queries", 2), ("embed_query", 1)]
    first.close()
    second.close()


def test_the_result_cache_keys_on_every_parameter_and_misses_after_any_store_change(
        filled_store, minilm):
    filled = filled_store
    searcher = Searcher(filled, minilm)
    try:
        def ask(**options):
            return searcher.search_many([SearchRequest("carbon fixation by rubisco",
                                                       **options)])[0]

        assert not ask(k=1).cached
        assert ask(k=1).cached
        for options in ({"k": 2}, {"weights": FusionWeights(dense=1, sparse=0)},
                        {"per_document": True}, {"where": Filter(metadata={"topic": "physics"})},
                        {"where": Filter(doc_ids=frozenset({"fish"}))}):
            first, again = ask(**options), ask(**options)
            assert (first.cached, again.cached) == (False, True), options
            assert first.hits == again.hits
        assert [h.doc_id for h in ask(where=Filter(metadata={"topic": "physics"})).hits] == [
            "stars"]

        # a change to a document the query does not even find still moves the generation
        fill(filled, minilm, {"sleep": "Sleep loss harms memory in mice and in people."},
             version=2)
        assert not ask(k=1).cached
        assert sample(searcher.serving, "ragstream_search_result_cache_hits_total",
                      store=filled.store.search) == 7  # the repeats above
    finally:
        searcher.close()


async def test_an_update_then_the_same_query_answers_with_the_update(settings, topics,
                                                                     redis_client, minilm):
    """Through the whole pipeline: documents.v1, the embedding and reindex workers, the store."""
    v1 = ("The Calvin cycle fixes carbon dioxide with the enzyme rubisco in the stroma, using "
          "ATP and NADPH from the light reactions to build sugars.")
    v2 = v1 + " Rubisco is the most abundant protein on Earth, and it is slow."
    query = [SearchRequest("how do plants fix carbon dioxide", k=2)]
    searcher = Searcher(settings, minilm)
    try:
        async with pipeline(settings, minilm), Publisher(settings) as pub:
            await pub.publish([document_upserted("calvin", v1, version=1),
                               document_upserted("fish", DOCS["fish"], version=1)])
            await wait_for_chunks(redis_client, settings.group_prefix, {
                "calvin#0": _hash(v1), "fish#0": _hash(DOCS["fish"])})
            first = searcher.search_many(query)[0]
            assert (first.cached, first.hits[0].text) == (False, v1)
            assert searcher.search_many(query)[0].cached

            await pub.publish([document_upserted("calvin", v2, version=2)])
            await wait_for_chunks(redis_client, settings.group_prefix, {
                "calvin#0": _hash(v2), "fish#0": _hash(DOCS["fish"])})
            updated = searcher.search_many(query)[0]
            assert (updated.cached, updated.hits[0].text) == (False, v2)
            assert searcher.search_many(query)[0].hits[0].text == v2

            await pub.publish([document_deleted("calvin", version=3)])
            await wait_for_chunks(redis_client, settings.group_prefix,
                                  {"fish#0": _hash(DOCS["fish"])})
            deleted = searcher.search_many(query)[0]
            assert not deleted.cached
            assert [h.doc_id for h in deleted.hits] == ["fish"]
    finally:
        searcher.close()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_rerank_orders_the_fused_candidates_by_the_cross_encoders_scores(filled, minilm,
                                                                         standin):
    from sentence_transformers import CrossEncoder

    settings = Settings.from_env({}, **_env(filled), serving_reranker="cross-encoder",
                                 serving_reranker_model=str(standin), serving_rerank_top_k=5,
                                 serving_rerank_budget_ms=120_000)
    searcher = Searcher(settings, minilm)
    try:
        query = "does vitamin D prevent fractures"
        fused = searcher.search(query, k=5)
        [result] = searcher.search_many([SearchRequest(query, k=3, rerank=True)])
        scores = CrossEncoder(str(standin), max_length=256).predict(
            [(query, h.text) for h in fused])
        order = sorted(range(len(fused)), key=lambda i: -scores[i])[:3]
        assert result.rerank == "reranked"
        assert [h.chunk_id for h in result.hits] == [fused[i].chunk_id for i in order]
        assert [h.rerank_score for h in result.hits] == pytest.approx(
            [float(scores[i]) for i in order], abs=1e-5)
        assert searcher.search_many([SearchRequest(query, k=3, rerank=True)])[0].cached
        assert sample(searcher.serving, "ragstream_search_rerank_total", outcome="reranked") == 1
    finally:
        searcher.close()


def test_a_slow_or_absent_reranker_gives_the_fused_order_flagged_counted_and_uncached(
        filled, minilm, standin, tmp_path):
    query = SearchRequest("does vitamin D prevent fractures", k=3, rerank=True)
    slow = Settings.from_env({}, **_env(filled), serving_reranker="cross-encoder",
                             serving_reranker_model=str(standin), serving_rerank_budget_ms=0.001)
    searcher = Searcher(slow, minilm)
    try:
        searcher.serving.rerank.warm()
        fused = searcher.search(query.query, k=3)
        first, again = searcher.search_many([query]), searcher.search_many([query])
        for [result] in (first, again):
            assert result.rerank in ("timeout", "overloaded") and not result.cached
            assert result.hits == fused and all(h.rerank_score is None for h in result.hits)
        counted = sum(sample(searcher.serving, "ragstream_search_rerank_total", outcome=o)
                      for o in ("timeout", "overloaded"))
        assert counted == 2
    finally:
        searcher.close()

    absent = Settings.from_env({}, **_env(filled), serving_reranker="cross-encoder",
                               serving_reranker_model=str(tmp_path / "no-such-model"))
    searcher = Searcher(absent, minilm)
    try:
        [result] = searcher.search_many([query])
        assert (result.rerank, [h.chunk_id for h in result.hits]) == (
            "unavailable", [h.chunk_id for h in fused])
    finally:
        searcher.close()

    with contextlib.closing(Searcher(filled, minilm)) as searcher, \
            pytest.raises(ValueError, match="no re-ranker"):
        searcher.search_many([query])


def test_the_lru_is_bounded_by_entries_by_size_and_by_time():
    lru = Lru(max_entries=2, max_size=10, ttl_s=0.2)
    lru.put("a", 1, size=4)
    lru.put("b", 2, size=4)
    assert lru.get("a") == 1  # "b" is now the least recently used
    lru.put("c", 3, size=4)
    assert (lru.get("b"), len(lru), lru.size) == (None, 2, 8)
    lru.put("d", 4, size=9)  # over the size bound: evicts until it fits
    assert (lru.get("a"), lru.get("c"), lru.get("d"), lru.size) == (None, None, 4, 9)
    lru.put("huge", 5, size=11)  # larger than the whole cache: never held
    assert lru.get("huge") is None
    time.sleep(0.25)
    assert lru.get("d") is None and len(lru) == 0
    assert Lru(max_entries=0).put("x", 1) is None and len(Lru(max_entries=0)) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_filtered_search_of_an_empty_store_finds_nothing(backend, env, minilm):
    # schemathesis found it through POST /v1/search: with a filter and no chunk, the embedded
    # store's _filtered asks tantivy for 0 hits and tantivy panics (a 500). The fix is the
    # embedded store's (return [] when it holds no chunk), outside this branch's files
    settings = Settings.from_env(env, store_search=backend)
    store = open_store(settings)
    store.ensure_schema(minilm.model_id, minilm.dimension)
    try:
        with contextlib.closing(Searcher(settings, minilm)) as searcher:
            for where in (Filter(doc_ids=frozenset({"a"})), Filter(metadata={"topic": "x"})):
                assert searcher.search("anything", where=where) == []
    finally:
        store.drop()
