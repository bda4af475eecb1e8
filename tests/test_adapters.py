"""Serving over HTTP as RAG applications meet it, each against a real gateway process on real
Kafka and Redis: batched ``POST /v1/search`` with caches, limits and the re-ranker; the LangChain
and LlamaIndex retrievers (the real libraries from PyPI); the official ``openai`` client on
``POST /v1/embeddings``. Every one goes through the gateway's keys and scopes."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np
import openai
import pytest

from ragstream.adapters.client import GatewayError
from ragstream.gateway.auth import new_key
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import ChunkUpsert
from testing.cross_encoder import build_standin
from tests.serving_support import DOCS, QUERIES, TOP, fill
from tests.test_gateway import Server

MAX_BATCH = 8


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return build_standin(tmp_path_factory.mktemp("cross-encoder") / "model")


@pytest.fixture
def keys():
    return {name: new_key(name, scopes, 1000.0, burst) for name, scopes, burst in [
        ("reader", ["search"], 1000), ("tiny", ["search"], 5), ("publisher", ["publish"], 1000),
        ("embedder", ["infer"], 1000)]}


@pytest.fixture
def server(env, topics, tmp_path, keys, settings, minilm, standin):
    fill(settings, minilm, DOCS)
    s = Server({**env, "RAGSTREAM_SERVING_RERANKER": "cross-encoder",
                "RAGSTREAM_SERVING_RERANKER_MODEL": str(standin),
                "RAGSTREAM_SERVING_RERANK_BUDGET_MS": "120000",
                "RAGSTREAM_SERVING_MAX_BATCH_QUERIES": str(MAX_BATCH)},
               tmp_path, [entry for _, entry in keys.values()])
    s.start()
    yield s
    s.proc.stop()


def sample(metrics: str, series: str) -> float:
    [value] = [line.rsplit(" ", 1)[1] for line in metrics.splitlines()
               if line.startswith(series + " ")]
    return float(value)


def auth(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name][0]}"}


def test_a_batch_of_queries_is_answered_in_order_cached_until_the_store_changes(
        server, keys, settings, minilm):
    url, reader = server.url + "/v1/search", auth(keys, "reader")
    body = {"queries": [{"q": q, "k": 3, "rerank": False} for q in QUERIES]}
    first = httpx.post(url, json=body, headers=reader, timeout=120)
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [r["query"] for r in results] == QUERIES
    assert [r["hits"][0]["doc_id"] for r in results] == TOP
    assert {(r["cached"], r["rerank"], r["store"]) for r in results} == {
        (False, "off", "embedded")}
    again = httpx.post(url, json=body, headers=reader, timeout=120).json()["results"]
    assert all(r["cached"] for r in again)
    assert [r["hits"] for r in again] == [r["hits"] for r in results]

    # re-ranked by default here (a re-ranker is configured), and cached as such
    reranked = {"queries": [{"q": q, "k": 3} for q in QUERIES]}
    for cached in (False, True):
        out = httpx.post(url, json=reranked, headers=reader, timeout=120).json()["results"]
        assert {(r["cached"], r["rerank"]) for r in out} == {(cached, "reranked")}
        for r in out:
            scores = [h["rerank_score"] for h in r["hits"]]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)

    # the single-query GET shares the batch's cache: the same query and parameters hit it
    one = httpx.get(url, params={"q": QUERIES[0], "k": 3, "rerank": "false"}, headers=reader)
    assert one.status_code == 200, one.text
    assert (one.json()["cached"], one.json()["hits"]) == (True, results[0]["hits"])
    physics = httpx.post(url, headers=reader, json={"queries": [{
        "q": "stars", "rerank": False, "filter": {"metadata": {"topic": "physics"}}}]})
    assert [h["doc_id"] for h in physics.json()["results"][0]["hits"]] == ["stars"]

    # a change to the store: the next identical batch misses and shows it
    store = open_store(settings)
    text = "Zebrafish hearts heal by cardiomyocyte division, and so do their fins."
    store.apply([ChunkUpsert("fish#0", "fish", 2, 0, text,
                             hashlib.sha256(text.encode()).hexdigest(), minilm.model_id,
                             minilm.embed([text])[0], {"topic": "biology"})])
    store.close()
    after = httpx.post(url, json=body, headers=reader, timeout=120).json()["results"]
    assert not any(r["cached"] for r in after)
    assert after[0]["hits"][0]["text"] == text

    metrics = httpx.get(server.url + "/metrics").text
    assert sample(metrics, 'ragstream_search_result_cache_hits_total{store="embedded"}') == 9
    assert sample(metrics, 'ragstream_search_rerank_total{outcome="reranked"}') == 4


def test_search_limits_stores_scopes_and_costs_are_4xx_that_say_why(server, keys):
    url, reader = server.url + "/v1/search", auth(keys, "reader")
    too_many = {"queries": [{"q": f"query {i}"} for i in range(MAX_BATCH + 1)]}
    r = httpx.post(url, json=too_many, headers=reader)
    assert r.status_code == 422 and f"at most {MAX_BATCH}" in r.text
    for store in ("pgvector", "qdrant"):  # real stores, but not kept fresh here
        r = httpx.get(url, params={"q": "x", "store": store}, headers=reader)
        assert r.status_code == 422 and "does not keep the store" in r.text, store
    assert httpx.get(url, params={"q": "x", "store": "nope"}, headers=reader).status_code == 422
    r = httpx.post(url, json={"queries": [{"q": "x", "dense": 0, "sparse": 0}]}, headers=reader)
    assert r.status_code == 422 and "both 0" in r.text
    # 6 queries, each re-ranked: 1 + 5 + 6 tokens, more than the key's burst of 5
    r = httpx.post(url, json={"queries": [{"q": q} for q in QUERIES + QUERIES[:2]]},
                   headers=auth(keys, "tiny"), timeout=120)
    assert r.status_code == 413 and "burst" in r.text
    assert httpx.post(url, json={"queries": [{"q": "x"}]},
                      headers=auth(keys, "publisher")).status_code == 403
    assert httpx.post(url, json={"queries": [{"q": "x"}]}).status_code == 401


async def test_langchain_and_llamaindex_retrievers_read_the_gateway(server, keys):
    from llama_index.core.schema import QueryBundle

    from ragstream.adapters.langchain import RagstreamRetriever as LangChainRetriever
    from ragstream.adapters.llamaindex import RagstreamRetriever as LlamaIndexRetriever

    key = keys["reader"][0]
    chain = LangChainRetriever(base_url=server.url, api_key=key, k=2, rerank=False)
    docs = chain.invoke(QUERIES[0])
    assert [d.id for d in docs][0] == "fish#0"
    assert docs[0].page_content == DOCS["fish"]
    assert docs[0].metadata["doc_id"] == "fish" and docs[0].metadata["topic"] == "biology"
    assert [d.id for d in await chain.ainvoke(QUERIES[0])] == [d.id for d in docs]
    batch = chain.batch(QUERIES)
    assert [b[0].metadata["doc_id"] for b in batch] == TOP
    physics = LangChainRetriever(base_url=server.url, api_key=key,
                                 filter={"metadata": {"topic": "physics"}})
    assert [d.metadata["doc_id"] for d in physics.invoke("stars")] == ["stars"]
    with pytest.raises(GatewayError) as refused:
        LangChainRetriever(base_url=server.url, api_key=keys["publisher"][0]).invoke("x")
    assert refused.value.status_code == 403

    llama = LlamaIndexRetriever(server.url, key, similarity_top_k=2, rerank=True)
    nodes = llama.retrieve(QUERIES[1])  # the stand-in's order: scores, not relevance, count here
    assert len(nodes) == 2 and all(n.node.text in DOCS.values() for n in nodes)
    assert all(n.score == n.node.metadata["rerank_score"] is not None for n in nodes)
    assert nodes[0].score >= nodes[1].score
    fused = await LlamaIndexRetriever(server.url, key, rerank=False).aretrieve(
        QueryBundle(QUERIES[3]))
    assert fused[0].node.metadata["doc_id"] == "bones"
    assert fused[0].score == fused[0].node.metadata["score"]


def test_the_openai_client_gets_embeddings_unchanged(server, keys, minilm):
    texts = ["vitamin D and fractures", "zebrafish heart regeneration"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["embedder"][0])
    default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64 on the wire
    floats = client.embeddings.create(model=minilm.model_id, input=texts,
                                      encoding_format="float")
    expected = minilm.embed(texts)
    for response in (default, floats):
        assert [d.index for d in response.data] == [0, 1]
        assert np.allclose([d.embedding for d in response.data], expected, atol=1e-6)
        assert response.model == minilm.model_id
        pieces = sum(len(i) for i in minilm.model.tokenizer(texts)["input_ids"])
        assert response.usage.prompt_tokens == response.usage.total_tokens == pieces
    one = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2",
                                   input=texts[0])
    assert len(one.data) == 1 and len(one.data[0].embedding) == minilm.dimension

    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=128)
    search_only = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["reader"][0])
    with pytest.raises(openai.PermissionDeniedError):
        search_only.embeddings.create(model="all-MiniLM-L6-v2", input="x")
    nobody = openai.OpenAI(base_url=server.url + "/v1", api_key="rsk_unknown", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        nobody.embeddings.create(model="all-MiniLM-L6-v2", input="x")
