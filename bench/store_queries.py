"""Query latency and reader memory per store: a store's hybrid candidates (dense + keyword, 100
each) p50/p99, and the resident memory of one reader process, at 100k chunks (10k with --quick),
next to the embedded index's in the same run (the baseline).

The chunks are SciFact abstracts cut into 40-word windows, repeated under new ids up to the
size; their vectors are synthetic, 384-d, in 256 clusters (embedding 100k windows with MiniLM
would take most of an hour here, and neither ranking's cost depends on where a vector came
from). Queries are noisy copies of stored vectors with SciFact's query texts. Each store is
loaded through ``apply`` (the reindex worker's path), then read by a fresh process that opens
the store, answers the queries and reports its peak RSS: the embedded reader loads a compacted
snapshot, as a restarted gateway does; a pgvector reader holds a connection pool only, and a
Qdrant reader here is the embedded engine holding the whole shard (a Qdrant server's reader would
hold a client only; none can run here).

    .venv/bin/python bench/store_queries.py --store pgvector [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402
from ragstream.config import Settings  # noqa: E402
from ragstream.vectorstores import open_store  # noqa: E402
from ragstream.vectorstores.base import ChunkUpsert  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/scifact_beir"
DIM = 384
MODEL = "bench-synthetic-384"
WINDOW = 40


def chunks(texts: list[str], total: int) -> list[tuple[str, str]]:
    windows = [" ".join(words[i:i + WINDOW]) for words in (t.split() for t in texts)
               for i in range(0, max(len(words), 1), WINDOW)]
    return [(f"r{n // len(windows)}-w{n % len(windows)}", windows[n % len(windows)])
            for n in range(total)]


def vectors(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((256, DIM)).astype(np.float32)
    v = centers[rng.integers(0, 256, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def load(settings: Settings, name: str, rows: list[tuple[str, str]], vecs: np.ndarray) -> float:
    store = open_store(settings, name)
    store.ensure_schema(MODEL, DIM)
    started = time.perf_counter()
    for i in range(0, len(rows), 500):
        store.apply([ChunkUpsert(f"{cid}#0", cid, 1, 0, text, f"{i + j:064x}", MODEL, vecs[i + j])
                     for j, (cid, text) in enumerate(rows[i:i + 500])])
    seconds = time.perf_counter() - started
    if name == "embedded":  # a restarted reader starts from a snapshot, not a 100k-entry log
        from ragstream.index.compaction import compact
        compact(settings)
    store.close()
    return seconds


def read(settings: Settings, name: str, queries: list) -> None:
    """In a fresh process: open the store, answer the queries, print latencies and peak RSS."""
    store = open_store(settings, name)
    latencies = []
    for text, vector in queries:
        started = time.perf_counter()
        store.candidates(np.asarray(vector, dtype=np.float32), text, 100)
        latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"latencies_ms": latencies[3:], "rss_mib": peak_rss_mib()}))  # 3 warm-ups


def peak_rss_mib() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a reader would
    # report the peak of the loader that started it
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(overrides: dict, name: str, queries: list) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--read", name], input=json.dumps([overrides, queries]),
        capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    lat = np.array(result["latencies_ms"])
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "rss_mib": result["rss_mib"]}


def main() -> None:
    p = harness.parser(__doc__, "10k chunks and 50 queries instead of 100k and 300",
                       "a BEIR folder (default: the shared SciFact)")
    p.add_argument("--store", default="pgvector", choices=("embedded", "pgvector", "qdrant"))
    p.add_argument("--read", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.read:
        overrides, queries = json.loads(sys.stdin.read())
        read(Settings(**overrides), args.read, queries)
        return
    total, n_queries = (10_000, 50) if args.quick else (100_000, 300)
    from bench.retrieval_support import load_beir  # here: the reader process stays light
    beir = load_beir(args.data or DATA)
    rows = chunks([t for _, t in beir.corpus.values()], total)
    vecs = vectors(total)
    rng = np.random.default_rng(11)
    texts = list(beir.queries.values())
    queries = []
    for q in range(n_queries):
        v = vecs[rng.integers(total)] + 0.2 * rng.standard_normal(DIM).astype(np.float32)
        queries.append([texts[q % len(texts)], (v / np.linalg.norm(v)).tolist()])

    results = {}
    with harness.falkordb() as redis_server, harness.workdir() as data:
        for name in dict.fromkeys(["embedded", args.store]):
            overrides = dict(redis_url=redis_server.url, data_dir=str(data / name),
                             group_prefix=f"benchq{total}", log_level="WARNING")
            settings = Settings(**overrides)
            seconds = load(settings, name, rows, vecs)
            results[name] = {"load_rows_per_s": total / seconds,
                             **measure(overrides, name, queries)}
            open_store(settings, name).drop()

    harness.table([("store", "<10"), ("load rows/s", ">12.0f"), ("p50 ms", ">8.2f"),
                   ("p99 ms", ">8.2f"), ("reader RSS MiB", ">15.0f")],
                  [(n, r["load_rows_per_s"], r["p50_ms"], r["p99_ms"], r["rss_mib"])
                   for n, r in results.items()])
    base, ours = results["embedded"], results[args.store]
    harness.report("store_queries", "hybrid candidates p50 latency", round(base["p50_ms"], 3),
                   round(ours["p50_ms"], 3), round(ours["p50_ms"] / base["p50_ms"], 3), "ms",
                   store=args.store, chunks=total, queries=n_queries - 3,
                   baseline_p99_ms=round(base["p99_ms"], 3), p99_ms=round(ours["p99_ms"], 3),
                   baseline_reader_rss_mib=round(base["rss_mib"]),
                   reader_rss_mib=round(ours["rss_mib"]),
                   rss_ratio=round(ours["rss_mib"] / base["rss_mib"], 3),
                   baseline_is="the embedded index (usearch + tantivy replica)")


if __name__ == "__main__":
    main()
