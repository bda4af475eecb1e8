"""Search serving end to end through a real gateway process: a batch against sequential calls,
cache hits against misses, and whether any answer is stale after the store changes.

- batch_speedup: the same kind of work, 64 SciFact test queries, sent as 64 sequential
  ``GET /v1/search`` calls (the baseline: one query per call, as before batching) and as one
  ``POST /v1/search`` of 64 (the project). Each side gets its own queries, so neither reads the
  other's caches: both pay for the model and the store.
- cache_miss_p50_ms / cache_hit_p50_ms: per-call latency of those 64 GETs the first time (nothing
  cached: the query vector and the store read) and the second time (the result cache).
- stale_results: one document of the answers is then updated in the store, and the 64 GETs run
  again: every answer served from the cache, and every hit that still shows the old text, is a
  stale result. It must be 0.

The corpus is SciFact's first documents, one chunk each, embedded by the gateway
(``POST /v1/embeddings``) and written through the store interface; the store is the default
(embedded). Latencies are client-side, over loopback, with a keep-alive connection.

    .venv/bin/python bench/search_serving.py [--quick] [--data BEIR_FOLDER]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.retrieval_support import load_beir  # noqa: E402
from ragstream.config import Settings  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.gateway.auth import new_key  # noqa: E402
from ragstream.stack import ManagedProcess, free_port  # noqa: E402
from ragstream.transport import ensure_topics  # noqa: E402
from ragstream.vectorstores import open_store  # noqa: E402
from ragstream.vectorstores.base import ChunkUpsert  # noqa: E402
from schemas.catalogue import all_topic_names  # noqa: E402

BATCH = 64
K = 10
CHUNK_CHARS = 1200  # about the pipeline's 240-token chunks


def embed(http: httpx.Client, texts: list[str]) -> tuple[str, list[np.ndarray]]:
    out: list[np.ndarray] = []
    model = ""
    for start in range(0, len(texts), 256):
        r = http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                              "input": texts[start:start + 256]}, timeout=600)
        r.raise_for_status()
        model = r.json()["model"]
        out += [np.asarray(d["embedding"], dtype=np.float32) for d in r.json()["data"]]
    return model, out


def chunk(doc_id: str, version: int, text: str, model: str, vector: np.ndarray) -> ChunkUpsert:
    return ChunkUpsert(f"{doc_id}#0", doc_id, version, 0, text,
                       hashlib.sha256(text.encode()).hexdigest(), model, vector)


def sequential(http: httpx.Client, queries: list[str]) -> tuple[float, list[float], list[dict]]:
    """Total seconds, per-call seconds, answers."""
    latencies, answers = [], []
    started = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        r = http.get("/v1/search", params={"q": q, "k": K})
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        answers.append(r.json())
    return time.perf_counter() - started, latencies, answers


def batched(http: httpx.Client, queries: list[str]) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    r = http.post("/v1/search", json={"queries": [{"q": q, "k": K} for q in queries]},
                  timeout=600)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    return elapsed, r.json()["results"]


def stale(answers: list[dict], chunk_id: str, old_text: str) -> int:
    """Answers from the cache, and hits that still show the changed chunk's old text."""
    return sum(a["cached"] for a in answers) + sum(
        h["chunk_id"] == chunk_id and h["text"] == old_text for a in answers for h in a["hits"])


def p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def main() -> None:
    parser = harness.parser(__doc__, quick="100 documents instead of 1,000", data="a BEIR folder")
    args = parser.parse_args()
    beir = load_beir(args.data or shared_data_dir() / "scifact_beir")
    # two rounds, alternating which side goes first; SciFact has 300 test queries, enough for 2
    n_docs, rounds = (100, 2) if args.quick else (1000, 2)
    docs = list(beir.corpus.items())[:n_docs]
    queries = list(beir.queries.values())
    if len(queries) < 2 * BATCH * rounds:
        raise SystemExit(f"{len(queries)} queries; this run needs {2 * BATCH * rounds}")

    with harness.workdir() as tmp, harness.tansu(tmp) as broker, harness.falkordb(tmp) as redis:
        reader, reader_entry = new_key("bench", ["search", "infer"], 1e6, 1_000_000)
        keys_file = tmp / "keys.json"
        keys_file.write_text(json.dumps([reader_entry.model_dump()]))
        env = {"RAGSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap,
               "RAGSTREAM_KAFKA_IDEMPOTENCE": "false", "RAGSTREAM_REDIS_URL": redis.url,
               "RAGSTREAM_API_KEYS_FILE": str(keys_file),
               "RAGSTREAM_DATA_DIR": str(tmp / "data"), "RAGSTREAM_LOG_LEVEL": "WARNING",
               "RAGSTREAM_SERVING_MAX_BATCH_QUERIES": str(BATCH)}
        settings = Settings.from_env(env)
        asyncio.run(ensure_topics(settings, all_topic_names(), 4))
        port = free_port()
        gateway = ManagedProcess("gateway", [sys.executable, "-m", "ragstream", "gateway",
                                             "--port", str(port)], tmp / "gateway.log", env=env)
        store = open_store(settings)
        gateway.start()
        try:
            url = f"http://127.0.0.1:{port}"
            gateway.wait_ready(lambda: httpx.get(url + "/healthz").status_code == 200, 120)
            with httpx.Client(base_url=url, timeout=120,
                              headers={"Authorization": f"Bearer {reader}"}) as http:
                texts = [f"{title}\n\n{text}"[:CHUNK_CHARS] for _, (title, text) in docs]
                model, vectors = embed(http, texts)
                store.ensure_schema(model, len(vectors[0]))
                store.apply([chunk(d, 1, t, model, v)
                             for (d, _), t, v in zip(docs, texts, vectors, strict=True)])
                # warm: the searcher, the replica and the model's first calls
                batched(http, ["warm up the gateway"] * 2)
                sequential(http, ["warm up a single search"])

                seq_s, batch_s, batch_cached_s, misses, hits = [], [], [], [], []
                for r in range(rounds):
                    a = queries[2 * r * BATCH:(2 * r + 1) * BATCH]
                    b = queries[(2 * r + 1) * BATCH:(2 * r + 2) * BATCH]
                    # alternate which goes first: a warmer process must not favour one side
                    if r % 2 == 0:
                        total, lat, answers = sequential(http, a)
                        batch_total, batch_answers = batched(http, b)
                    else:
                        batch_total, batch_answers = batched(http, b)
                        total, lat, answers = sequential(http, a)
                    assert not any(x["cached"] for x in answers + batch_answers)
                    seq_s.append(total)
                    batch_s.append(batch_total)
                    misses += lat
                    _, hit_lat, again = sequential(http, a)
                    assert all(x["cached"] for x in again)
                    hits += hit_lat
                    # the batch again, all from the cache: what a batch costs besides the search
                    cached_total, cached_answers = batched(http, b)
                    assert all(x["cached"] for x in cached_answers)
                    batch_cached_s.append(cached_total)

                # a change to a document the answers show: nothing may come from the cache now
                doc_id = answers[0]["hits"][0]["doc_id"]
                old = answers[0]["hits"][0]["text"]
                new = old + " (revised)"
                store.apply([chunk(doc_id, 2, new, model, embed(http, [new])[1][0])])
                _, after_lat, after = sequential(http, a)
                stale_results = stale(after, f"{doc_id}#0", old)
                shown = sum(1 for x in after for h in x["hits"] if h["chunk_id"] == f"{doc_id}#0")
        finally:
            gateway.stop()
            store.close()

    seq, batch = statistics.median(seq_s), statistics.median(batch_s)
    speedup = seq / batch
    harness.table([("path", "<44"), ("ms", ">10.1f")], [
        (f"{BATCH} sequential GET /v1/search", seq * 1000, "(baseline)"),
        (f"one POST /v1/search of {BATCH}", batch * 1000, "(project)"),
        (f"one POST /v1/search of {BATCH}, all cached", statistics.median(batch_cached_s) * 1000),
        ("GET p50, nothing cached", p50_ms(misses)),
        ("GET p50, answered from the result cache", p50_ms(hits)),
        ("GET p50 after a store change", p50_ms(after_lat))])
    print(f"batch speedup {speedup:.1f}x (target >= 5); stale results after a change: "
          f"{stale_results} (the changed chunk appeared in {shown} answers); {len(docs)} "
          f"documents, {rounds} round(s), k={K}")
    harness.report("search_serving", "batch_speedup", round(seq * 1000, 1),
                   round(batch * 1000, 1), round(speedup, 2), "ms",
                   batch_speedup=round(speedup, 2), cache_hit_p50_ms=round(p50_ms(hits), 2),
                   cache_miss_p50_ms=round(p50_ms(misses), 2),
                   after_change_p50_ms=round(p50_ms(after_lat), 2),
                   batch_cached_ms=round(statistics.median(batch_cached_s) * 1000, 1),
                   stale_results=stale_results, changed_chunk_shown=shown, queries=BATCH,
                   rounds=rounds, documents=len(docs), k=K, store="embedded",
                   baseline_is=f"{BATCH} sequential GET /v1/search, keep-alive",
                   project_is=f"one POST /v1/search of {BATCH} queries", quick=args.quick)


if __name__ == "__main__":
    main()
