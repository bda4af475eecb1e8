"""The batch inference worker on a real Triton (PyTriton, started once for this module) and a real
Kafka (Tansu, fresh per test). Nothing is mocked; a server that cannot start fails the tests."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.embedders import TritonEmbedder
from ragstream.stack import free_port
from testing.inference_requests import embed_request, request, rerank_request
from ragstream.transport.base import TopicPartition
from ragstream.transport.kafka import committed_offsets
from ragstream.triton.server import TritonServer
from tests.helpers import eventually, handled, read_topic, running, start_worker
from workers.batch_inference import BatchInferenceWorker

TOPICS_ = ["alpha decay", "stock markets", "coffee farming", "jet engines", "river deltas",
           "opera houses", "chess openings", "volcanic soil"]


# How close a result must be to the same input sent straight to Triton. Not bit-equal: Triton's
# dynamic batcher groups the worker's requests and the direct call's differently (and by timing,
# so differently on a loaded machine), and a group's size and padded length change the reduction
# order of every fp32 matmul; on a GPU other kernels are picked per shape too. Through MiniLM's
# six fp32 layers that stays around 1e-7 (the most seen here: 1.2e-7, on components of about
# 0.04). 1e-5 leaves room for other machines while staying far below what tells results apart:
# two of these texts' vectors differ by at least 0.04 somewhere, and two rerank scores by at
# least 4.7e-5, so a result answered to the wrong request cannot pass (``_nearest`` checks it).
ATOL = 1e-5


def text(i: int) -> str:
    return f"Note {i}: a short paragraph about {TOPICS_[i % len(TOPICS_)]} and item {i * 7}."


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> TritonServer:
    # the model endpoints need the access token: every client here must send it
    server = TritonServer(tmp_path_factory.mktemp("triton"), max_batch_size=64,
                          max_queue_delay_us=2000, models="minilm,minilm_reranker,minilm_backup",
                          access_token=uuid.uuid4().hex, protect="inference,metadata,model-config")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def protocol() -> str:
    return "grpc"


@pytest.fixture
def infer_settings(env: dict[str, str], triton: TritonServer, protocol: str) -> Settings:
    values = {**env, **triton.worker_env(protocol),
              "RAGSTREAM_INFERENCE_MAX_DELAY_MS": "20",
              "RAGSTREAM_INFERENCE_RETRY_BACKOFF_S": "0.05",
              "RAGSTREAM_INFERENCE_BREAKER_RESET_S": "1"}
    return Settings.from_env(values)


async def publish(settings: Settings, envelopes) -> None:
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)


async def results(settings: Settings, n: int, timeout: float = 60) -> list[dict]:
    """Wait until the results topic holds at least ``n`` events; return their data."""
    seen: list = []

    async def enough() -> bool:
        seen[:] = await read_topic(settings, "inference.results.v1", timeout=0.5)
        return len(seen) >= n

    await eventually(enough, timeout, interval=0.5, message=f"{n} inference results")
    return [json.loads(r.value)["data"] for r in seen]


def direct(triton: TritonServer, model: str, inputs: dict[str, np.ndarray]) -> dict:
    """One request straight to Triton, outside the worker: the reference."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    tensors = []
    for name, arr in inputs.items():
        t = grpcclient.InferInput(name, list(arr.shape), "BYTES")
        t.set_data_from_numpy(arr)
        tensors.append(t)
    headers = triton.headers("grpc")
    res = client.infer(model, tensors, headers=headers)
    names = [o["name"] for o in
             client.get_model_metadata(model, headers=headers, as_json=True)["outputs"]]
    client.close()
    return {n: res.as_numpy(n) for n in names}


def column(values: list[str]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=np.object_).reshape(-1, 1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_results_match_direct_triton_calls(infer_settings, topics, triton, protocol):
    n = 48
    embeds = [embed_request(text(i), correlation_id=f"e{i}", priority=i % 3) for i in range(n)]
    pairs = [(f"what about {TOPICS_[i % 8]}?", text(i)) for i in range(16)]
    reranks = [rerank_request(q, d, correlation_id=f"r{i}") for i, (q, d) in enumerate(pairs)]
    await publish(infer_settings, embeds + reranks)
    async with running(BatchInferenceWorker(), infer_settings):
        out = await results(infer_settings, n + len(pairs))

    ids = [r["correlation_id"] for r in out]
    assert len(ids) == len(set(ids)) == n + len(pairs), "one result per request, no duplicates"
    assert set(ids) == {f"e{i}" for i in range(n)} | {f"r{i}" for i in range(len(pairs))}
    by_id = {r["correlation_id"]: r for r in out}
    assert all(r["status"] == "ok" for r in out), [r for r in out if r["status"] != "ok"][:2]

    want = direct(triton, "minilm", {"text": column([text(i) for i in range(n)])})["embedding"]
    got = []
    for i in range(n):
        (tensor,) = by_id[f"e{i}"]["outputs"]
        assert tensor["name"] == "embedding" and tensor["datatype"] == "FP32"
        assert tensor["shape"] == [384]
        got.append(np.array(tensor["data"], dtype=np.float32))
    np.testing.assert_allclose(np.stack(got), want, rtol=0, atol=ATOL)
    assert _nearest(np.stack(got), want) == list(range(n))
    want = direct(triton, "minilm_reranker", {"query": column([q for q, _ in pairs]),
                                              "passage": column([d for _, d in pairs])})["score"]
    scores = []
    for i in range(len(pairs)):
        (tensor,) = by_id[f"r{i}"]["outputs"]
        assert tensor["shape"] == [1]
        scores.append(tensor["data"])
    np.testing.assert_allclose(np.array(scores), want, rtol=0, atol=ATOL)
    assert _nearest(np.array(scores), want) == list(range(len(pairs)))


def _nearest(got: np.ndarray, want: np.ndarray) -> list[int]:
    """For each result, the reference it is closest to (max abs difference): its own index
    unless results were swapped between requests."""
    distance = np.abs(got[:, None, :] - want[None, :, :]).max(axis=2)
    return distance.argmin(axis=1).tolist()


async def test_expired_and_malformed_requests_do_not_fail_their_batch_mates(
        infer_settings, topics, triton):
    past = datetime.now(UTC) - timedelta(seconds=1)
    future = datetime.now(UTC) + timedelta(minutes=5)
    good = [embed_request(text(i), correlation_id=f"ok{i}", deadline=future) for i in range(10)]
    expired = [embed_request(text(i), correlation_id=f"late{i}", deadline=past) for i in range(3)]
    bad = [
        request("minilm", {"text": ("FP32", [1], [1.0])}, correlation_id="bad-dtype"),
        request("minilm", {"text": ("BYTES", [2], ["a", "b"])}, correlation_id="bad-shape"),
        request("minilm", {"txt": ("BYTES", [1], ["a"])}, correlation_id="bad-name"),
        request("no_such_model", {"text": ("BYTES", [1], ["a"])}, correlation_id="bad-model"),
        request("minilm", {"text": ("BYTES", [1], ["a", "b"])}, correlation_id="bad-count"),
    ]
    # the bad ones interleaved, so they sit inside the good ones' batch; the expired ones
    # first, so they are answered before their model is first looked up
    mixed = expired + [e for pair in zip(good[:5], bad) for e in pair] + good[5:]
    await publish(infer_settings, mixed)
    async with running(BatchInferenceWorker(), infer_settings) as runtime:
        out = await results(infer_settings, len(mixed))
        dlq = await read_topic(infer_settings, "inference.requests.v1.dlq", timeout=1)

    by_id = {r["correlation_id"]: r for r in out}
    assert len(out) == len(by_id) == len(mixed)
    for i in range(10):
        assert by_id[f"ok{i}"]["status"] == "ok" and len(by_id[f"ok{i}"]["outputs"]) == 1
    for i in range(3):
        assert by_id[f"late{i}"]["status"] == "expired"
        assert by_id[f"late{i}"]["outputs"] == [] and "deadline" in by_id[f"late{i}"]["error"]
    for cid in ("bad-dtype", "bad-shape", "bad-name", "bad-model", "bad-count"):
        assert by_id[cid]["status"] == "invalid", by_id[cid]
        assert by_id[cid]["error"], cid
    assert "FP32" in by_id["bad-dtype"]["error"] and "shape" in by_id["bad-shape"]["error"]
    assert "no_such_model" in by_id["bad-model"]["error"]
    dead = {json.loads(r.value)["data"]["correlation_id"] for r in dlq}
    assert dead == {"bad-dtype", "bad-shape", "bad-name", "bad-model", "bad-count"}
    # the expired ones never reached Triton; the ten good ones did
    sent = runtime.metrics.registry.get_sample_value(
        "ragstream_inference_batch_size_sum", {"model": "minilm"})
    assert sent == 10
    # results by status; a model Triton does not know gets no series of its own
    def counted(model: str, status: str) -> float | None:
        return runtime.metrics.registry.get_sample_value(
            "ragstream_inference_results_total", {"model": model, "status": status})
    assert (counted("minilm", "ok"), counted("minilm", "expired")) == (10, 3)
    assert counted("minilm", "invalid") == 4 and counted("other", "invalid") == 1
    assert counted("no_such_model", "invalid") is None


async def test_triton_embedder_gives_the_local_minilm_vectors(triton, minilm, env):
    texts = [text(i) for i in range(20)] + ["", "a much longer text " * 40]
    for protocol in ("grpc", "http"):
        values = {**env, **triton.worker_env(protocol), "RAGSTREAM_EMBEDDER": "triton"}
        settings = Settings.from_env(values)
        embedder = await asyncio.to_thread(TritonEmbedder, settings)
        assert embedder.info.max_batch_size == 64 and embedder.model_id == minilm.model_id
        got = await asyncio.to_thread(embedder.embed, texts)
        want = minilm.embed(texts)
        assert got.shape == want.shape == (len(texts), 384)
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
        assert embedder.model.tokenizer("hello")["input_ids"] == \
            minilm.model.tokenizer("hello")["input_ids"]


def test_search_reranks_through_triton_and_falls_back_when_it_is_gone(triton, minilm, env,
                                                                      settings):
    """RAGSTREAM_SERVING_RERANKER=triton: the fused candidates come back in the order of the
    Triton model's scores (the same scores as a direct call), over gRPC and HTTP, with more
    pairs than the model's max batch; with Triton unreachable, the fused order, flagged."""
    from ragstream.vectorstores.search import SearchRequest, Searcher
    from tests.serving_support import DOCS, fill

    fill(settings, minilm, DOCS)
    query = "does vitamin D prevent fractures"
    for protocol in ("grpc", "http"):
        values = {**env, **triton.worker_env(protocol), "RAGSTREAM_SERVING_RERANKER": "triton",
                  "RAGSTREAM_SERVING_RERANKER_MODEL": "minilm_reranker",
                  "RAGSTREAM_SERVING_RERANK_TOP_K": "6",
                  "RAGSTREAM_SERVING_RERANK_BUDGET_MS": "60000"}
        searcher = Searcher(Settings.from_env(values), minilm)
        try:
            fused = searcher.search(query, k=6)
            [result] = searcher.search_many([SearchRequest(query, k=4, rerank=True)])
            # 20 queries of 6 candidates: 120 pairs, split at the model's batch limit of 64
            many = searcher.search_many([SearchRequest(f"{query} {i}", k=2, rerank=True)
                                         for i in range(20)])
        finally:
            searcher.close()
        want = direct(triton, "minilm_reranker", {"query": column([query] * len(fused)),
                                                  "passage": column([h.text for h in fused])}
                      )["score"].reshape(-1)
        order = sorted(range(len(fused)), key=lambda i: -want[i])[:4]
        assert result.rerank == "reranked" and len(fused) == 6
        assert [h.chunk_id for h in result.hits] == [fused[i].chunk_id for i in order]
        np.testing.assert_allclose([h.rerank_score for h in result.hits],
                                   [want[i] for i in order], rtol=0, atol=ATOL)
        assert {r.rerank for r in many} == {"reranked"}
        assert all(len(r.hits) == 2 and r.hits[0].rerank_score >= r.hits[1].rerank_score
                   for r in many)

    gone = {**env, "RAGSTREAM_TRITON_URL": f"127.0.0.1:{free_port()}",
            "RAGSTREAM_TRITON_TIMEOUT_S": "2", "RAGSTREAM_SERVING_RERANKER": "triton",
            "RAGSTREAM_SERVING_RERANKER_MODEL": "minilm_reranker"}
    searcher = Searcher(Settings.from_env(gone), minilm)
    try:
        [result] = searcher.search_many([SearchRequest(query, k=4, rerank=True)])
        assert result.rerank == "unavailable"
        assert [h.chunk_id for h in result.hits] == [h.chunk_id for h in fused[:4]]
        assert all(h.rerank_score is None for h in result.hits)
    finally:
        searcher.close()


async def test_embedding_worker_embeds_through_triton(env, topics, triton, minilm):
    """RAGSTREAM_EMBEDDER=triton: the embedding worker, built with no embedder of its own,
    publishes the local MiniLM's vectors, computed by Triton."""
    from producers.events import document_upserted
    from workers.embedding import EmbeddingWorker

    values = {**env, **triton.worker_env("grpc"), "RAGSTREAM_EMBEDDER": "triton"}
    settings = Settings.from_env(values)
    docs = {f"d{i}": " ".join(text(i + j) for j in range(4)) for i in range(3)}
    await publish(settings, [document_upserted(d, t, version=1) for d, t in docs.items()])
    async with running(EmbeddingWorker(), settings) as runtime:
        seen: list = []

        async def all_embedded() -> bool:
            seen[:] = await read_topic(settings, "chunks.embedded.v1", timeout=0.5)
            return len({json.loads(r.value)["data"]["doc_id"] for r in seen}) == len(docs)

        await eventually(all_embedded, 60, message="chunks embedded")
        assert isinstance(runtime.worker._embedder, TritonEmbedder)
    chunks = [json.loads(r.value)["data"] for r in seen]
    want = minilm.embed([c["text"] for c in chunks])
    got = np.array([c["vector"] for c in chunks], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert {c["model_id"] for c in chunks} == {minilm.model_id}


def test_triton_refuses_clients_without_the_access_token(triton):
    """So the header the worker sends from its secret is really checked."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inp = grpcclient.InferInput("text", [1, 1], "BYTES")
    inp.set_data_from_numpy(column(["hello"]))
    with pytest.raises(InferenceServerException):
        client.infer("minilm", [inp])
    with pytest.raises(InferenceServerException):
        client.infer("minilm", [inp], headers={triton.headers("grpc").popitem()[0]: "wrong"})
    assert client.infer("minilm", [inp], headers=triton.headers("grpc")).as_numpy(
        "embedding").shape == (1, 384)
    client.close()


async def test_breaker_opens_and_the_fallback_model_answers(env, topics, triton):
    """minilm goes away (unloaded) after the worker learned it: its breaker opens and its
    fallback, minilm_backup, answers the requests; with no fallback they would wait."""
    values = {**env, **triton.worker_env("grpc"), "RAGSTREAM_INFERENCE_RETRY_BACKOFF_S": "0.02",
              "RAGSTREAM_INFERENCE_RETRIES": "1", "RAGSTREAM_INFERENCE_BREAKER_FAILURES": "2",
              "RAGSTREAM_INFERENCE_BREAKER_RESET_S": "60",
              "RAGSTREAM_INFERENCE_MODELS": json.dumps({"minilm": {"fallback": "minilm_backup"}})}
    settings = Settings.from_env(values)
    control = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        async with running(BatchInferenceWorker(), settings) as runtime:
            await publish(settings, [embed_request(text(i), correlation_id=f"a{i}")
                                     for i in range(4)])
            await results(settings, 4)
            await asyncio.to_thread(control.unload_model, "minilm", headers=triton.headers("grpc"))
            await publish(settings, [embed_request(text(i), correlation_id=f"b{i}")
                                     for i in range(6)])
            out = await results(settings, 10)
            fallbacks = runtime.metrics.registry.get_sample_value(
                "ragstream_inference_fallbacks_total",
                {"model": "minilm", "fallback": "minilm_backup"})
    finally:
        control.close()
        # PyTriton's models cannot be loaded again by the repository API: restart the server
        # (the same ports), so the tests after this one find minilm again
        await asyncio.to_thread(triton.stop)
        await asyncio.to_thread(triton.start)
    by_id = {r["correlation_id"]: r for r in out}
    assert len(out) == len(by_id) == 10
    assert all(by_id[f"a{i}"]["served_by"] == "minilm" for i in range(4))
    assert all(by_id[f"b{i}"]["served_by"] == "minilm_backup" for i in range(6))
    assert all(r["status"] == "ok" and r["model"] == "minilm" for r in out)
    np.testing.assert_allclose(by_id["b0"]["outputs"][0]["data"],
                               by_id["a0"]["outputs"][0]["data"], rtol=0, atol=ATOL)
    assert fallbacks and fallbacks >= 1


async def test_triton_down_for_15s_loses_nothing_and_duplicates_nothing(
        infer_settings, topics, triton):
    """Requests keep coming while Triton is stopped for 15 s and restarted: every one is answered
    once it is back, exactly once."""
    n, rate = 240, 60.0  # requests per second, for 4 s; Triton goes down after the first second
    stop_at = 1.0

    async def produce() -> None:
        async with Publisher(infer_settings) as pub:
            started = time.monotonic()
            for i in range(n):
                await pub.publish([embed_request(text(i), correlation_id=f"c{i}")])
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))

    async with running(BatchInferenceWorker(), infer_settings) as runtime:
        producer = asyncio.create_task(produce())
        await asyncio.sleep(stop_at)
        await asyncio.to_thread(triton.stop)
        down = time.monotonic()
        await producer
        answered_before = len(await read_topic(infer_settings, "inference.results.v1", 0.5))
        await asyncio.sleep(max(0.0, 15 - (time.monotonic() - down)))
        assert answered_before < n, "Triton was down: some requests must have waited"
        await asyncio.to_thread(triton.start)
        # every request handled and committed: no redelivery can add a result after this read
        await eventually(lambda: _handled_all(runtime, n), 120, message=f"{n} requests handled")
        out = await results(infer_settings, n, timeout=5)
        handled_once = handled(runtime, "inference.requests.v1")
        paused = runtime.metrics.registry.get_sample_value(
            "ragstream_backpressure_pauses_total", {"worker": "batch_inference"})

    ids = [r["correlation_id"] for r in out]
    assert handled_once == n
    assert len(ids) == n, f"{len(ids)} results for {n} requests"
    assert set(ids) == {f"c{i}" for i in range(n)}
    assert all(r["status"] == "ok" for r in out), {r["error"] for r in out if r["status"] != "ok"}
    assert paused and paused > 0, "the outage must have paused consumption"
    dlq = await read_topic(infer_settings, "inference.requests.v1.dlq", timeout=0.5)
    assert dlq == []


async def test_a_sigkilled_worker_loses_no_request_and_answers_none_twice(
        env, topics, triton, tmp_path):
    """The worker process is SIGKILLed mid-run and started again: every request is answered,
    and a request answered before the kill but not yet committed is answered again under the
    same event id (derived from the request's), which consumers drop as a replay."""
    n, port = 400, free_port()
    worker_env = {**env, **triton.worker_env("grpc"), "RAGSTREAM_INFERENCE_MAX_DELAY_MS": "20",
                  "RAGSTREAM_METRICS_PORT": str(port)}
    settings = Settings.from_env(worker_env)
    requests = [embed_request(text(i), correlation_id=f"k{i}") for i in range(n)]

    worker = start_worker("batch_inference", worker_env, tmp_path, tag="-1")
    try:
        worker.wait_ready(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200,
                          60)
        async with Publisher(settings) as pub:
            await pub.publish(requests[:n // 2])
            answered: list = []

            async def some_answered() -> bool:
                answered[:] = await read_topic(settings, "inference.results.v1", timeout=0.2)
                return len(answered) >= 60
            await eventually(some_answered, 60, interval=0.1, message="results before the kill")
            worker.signal(signal.SIGKILL)
            worker.process.wait(10)
            await pub.publish(requests[n // 2:])  # and more while it is down
        worker = start_worker("batch_inference", worker_env, tmp_path, tag="-2")
        await eventually(lambda: _committed_all(settings, n), 120,
                         message=f"all {n} requests committed")
    finally:
        worker.stop()

    records = await read_topic(settings, "inference.results.v1", timeout=1)
    by_request: dict[str, list[dict]] = {}
    for r in records:
        event = json.loads(r.value)
        by_request.setdefault(event["data"]["correlation_id"], []).append(event)
    assert set(by_request) == {f"k{i}" for i in range(n)}  # nothing lost
    for cid, answers in by_request.items():
        assert len({a["id"] for a in answers}) == 1, cid  # a replay, never a second answer
        assert all(a["data"]["status"] == "ok" for a in answers), answers[0]["data"]
        first = answers[0]["data"]["outputs"][0]["data"]
        for again in answers[1:]:
            np.testing.assert_allclose(again["data"]["outputs"][0]["data"], first, rtol=0,
                                       atol=ATOL)
    print(f"results {len(records)} for {n} requests, replayed {len(records) - n}")


async def _committed_all(settings: Settings, n: int) -> bool:
    tps = [TopicPartition("inference.requests.v1", p) for p in range(settings.topic_partitions)]
    offsets = await committed_offsets(settings, settings.group_id("batch_inference"), tps)
    return sum(offsets.values()) >= n


async def _handled_all(runtime, n: int) -> bool:
    return handled(runtime, "inference.requests.v1") >= n


def _pki(folder) -> dict[str, str]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", "ca.key",
        "-out", "ca.crt", "-subj", "/CN=ragstream test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return {n: str(folder / n) for n in ("ca.crt", "server.crt", "server.key", "client.crt",
                                         "client.key")}


async def test_mutual_tls_over_grpc(env, topics, tmp_path_factory):
    """The worker reaches a Triton that serves gRPC over mutual TLS with the files its settings
    name; a client without a certificate, or without TLS, gets nowhere."""
    from ragstream.triton.client import TritonClient

    folder = tmp_path_factory.mktemp("tls")  # short: PyTriton's unix sockets live below it
    pki = _pki(folder)
    server = TritonServer(folder, models="minilm", extra_args=[
        "--grpc-server-cert", pki["server.crt"], "--grpc-server-key", pki["server.key"],
        "--grpc-root-cert", pki["ca.crt"]])
    server.start()
    try:
        base = {**env, **server.worker_env("grpc"), "RAGSTREAM_TRITON_TIMEOUT_S": "5"}

        def settings(**tls: str) -> Settings:
            values = {**base, **tls}
            return Settings.from_env(values)

        good = settings(RAGSTREAM_TRITON_SSL="true",
                        RAGSTREAM_TRITON_ROOT_CERTIFICATES=pki["ca.crt"],
                        RAGSTREAM_TRITON_CERTIFICATE_CHAIN=pki["client.crt"],
                        RAGSTREAM_TRITON_PRIVATE_KEY=pki["client.key"])
        for refused in (settings(RAGSTREAM_TRITON_SSL="true",
                                 RAGSTREAM_TRITON_ROOT_CERTIFICATES=pki["ca.crt"]),
                        settings()):
            client = TritonClient(refused)
            try:
                assert not await client.ready()
            finally:
                await client.close()

        await publish(good, [embed_request(text(i), correlation_id=f"tls{i}") for i in range(8)])
        async with running(BatchInferenceWorker(), good):
            out = await results(good, 8)
        assert sorted(r["correlation_id"] for r in out) == sorted(f"tls{i}" for i in range(8))
        assert all(r["status"] == "ok" for r in out), out[:2]
    finally:
        server.stop()
