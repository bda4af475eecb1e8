"""The embedding pipeline end to end: documents.v1 -> embedding worker -> chunks.embedded.v1 ->
reindex worker -> searchable, against raw ``model.encode`` on exactly the same chunk texts at its
fastest batch size: each of ``--raw-batch`` (4, 8, 16 and 32) is timed over all the chunks in the
same process and run, and the best is the baseline.

Three figures:
- throughput: pipeline chunks/s (publish to all searchable) over raw encode chunks/s (target 0.9);
- cache: a second pass over the same texts (new document ids, so every chunk is published again)
  served from the embedding cache, as a speed-up over the first pass (target 20x);
- freshness: documents published at a steady 5/s, each timed from its event to the moment a
  reader replica finds its chunk (p99 target under 1 s).

Documents are SciFact abstracts cut to their first ~100 words.

    .venv/bin/python bench/embedding_pipeline.py [--docs 500] [--quick] [--data BEIR_FOLDER]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.retrieval_support import load_beir, pipeline, services  # noqa: E402
from producers.events import document_upserted  # noqa: E402
from ragstream.publisher import Publisher  # noqa: E402
from ragstream.chunking import Chunker  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.embedders import load_embedder  # noqa: E402
from ragstream.index.replica import IndexReplica  # noqa: E402

WORDS = 100
RAW_BATCHES = (4, 8, 16, 32)


def documents(folder: Path, n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    corpus = list(load_beir(folder).corpus.items())[offset:offset + n]
    return [(doc_id, title, " ".join(text.split()[:WORDS])) for doc_id, (title, text) in corpus]


async def ingest(settings, docs, prefix: str, replica: IndexReplica, expected: int) -> float:
    started = time.perf_counter()
    async with Publisher(settings) as pub:
        await pub.publish(document_upserted(f"{prefix}{d}", text, version=1, title=title)
                          for d, title, text in docs)
    while True:
        with replica.lock:
            if sum(c.startswith(prefix) for c in replica.refresh().chunks) >= expected:
                return time.perf_counter() - started
        await asyncio.sleep(0.05)


async def freshness(settings, docs, rate: float, replica: IndexReplica) -> list[float]:
    """Publish one document every 1/rate s; time each from its event to searchable."""
    pending: dict[str, float] = {}
    latencies: list[float] = []

    async def watch() -> None:
        while pending or not published.is_set():
            with replica.lock:
                chunks = replica.refresh().chunks
            now = time.time()
            for chunk_id in [c for c in pending if c in chunks]:
                latencies.append(now - pending.pop(chunk_id))
            await asyncio.sleep(0.01)

    published = asyncio.Event()
    watcher = asyncio.create_task(watch())
    async with Publisher(settings) as pub:
        start = time.monotonic()
        for i, (d, title, text) in enumerate(docs):
            await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
            envelope = document_upserted(f"fresh-{d}", text, version=1, title=title)
            pending[f"fresh-{d}#0"] = envelope.time.timestamp()
            await pub.publish([envelope])
    published.set()
    await asyncio.wait_for(watcher, 60)
    return latencies


def raw_encode(model, texts: list[str], batches: list[int]) -> dict[int, float]:
    """Seconds raw ``encode`` takes over ``texts`` at each batch size."""
    model.encode(texts[:64], batch_size=max(batches), show_progress_bar=False)  # warm-up
    seconds = {}
    for size in batches:
        started = time.perf_counter()
        model.encode(texts, batch_size=size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
        seconds[size] = time.perf_counter() - started
    return seconds


async def run(settings, embedder, docs, fresh_docs, rate, raw_batches) -> dict:
    chunker = Chunker(embedder.model.tokenizer, settings.chunk_tokens,
                      settings.chunk_overlap_tokens)
    texts = [c.text for d, title, text in docs for c in chunker.split(d, text, title)]
    raw_s = raw_encode(embedder.model, texts, raw_batches)

    replica = IndexReplica(settings)
    try:
        async with pipeline(settings, embedder):
            first_s = await ingest(settings, docs, "a-", replica, len(texts))
            cached_s = await ingest(settings, docs, "b-", replica, len(texts))
            latencies = await freshness(settings, fresh_docs, rate, replica)
    finally:
        replica.close()
    return {"chunks": len(texts), "raw_s": raw_s, "first_s": first_s, "cached_s": cached_s,
            "latencies": latencies}


def main() -> None:
    parser = harness.parser(__doc__, quick="150 documents, 8 s of freshness",
                            data="a BEIR folder")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="documents/s for freshness")
    parser.add_argument("--raw-batch", type=int, action="append",
                        help=f"a batch size for raw encode (repeatable; default {RAW_BATCHES})")
    args = parser.parse_args()
    n = 150 if args.quick else args.docs
    fresh_n = int(args.rate * (8 if args.quick else 30))
    folder = args.data or shared_data_dir() / "scifact_beir"
    docs = documents(folder, n)
    fresh_docs = documents(folder, fresh_n, offset=n)
    with services() as settings:
        embedder = load_embedder(settings)
        r = asyncio.run(run(settings, embedder, docs, fresh_docs, args.rate,
                            args.raw_batch or list(RAW_BATCHES)))

    raw_sweep = {size: r["chunks"] / s for size, s in r["raw_s"].items()}
    best_batch = max(raw_sweep, key=raw_sweep.get)
    raw = raw_sweep[best_batch]
    piped = r["chunks"] / r["first_s"]
    cached = r["chunks"] / r["cached_s"]
    lat = np.array(r["latencies"]) * 1000
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
    harness.table([("measure", "44"), ("value", ">12")], [
        ("chunks (documents of ~100 words)", r["chunks"]),
        *((f"raw model.encode, batch {size}, chunks/s", f"{speed:.1f}")
          for size, speed in raw_sweep.items()),
        (f"raw encode at its best, batch {best_batch} (baseline)", f"{raw:.1f}"),
        ("pipeline first pass, chunks/s", f"{piped:.1f}"),
        ("pipeline / raw", f"{piped / raw:.2f}"),
        ("pipeline cached pass, chunks/s", f"{cached:.1f}"),
        ("cache speed-up (first / cached time)", f"{r['first_s'] / r['cached_s']:.1f}"),
        (f"freshness at {args.rate:g} docs/s, p50 ms", f"{p50:.0f}"),
        (f"freshness at {args.rate:g} docs/s, p99 ms", f"{p99:.0f}")], sep=" ")
    harness.report(
        "embedding_pipeline", "chunks_per_s_pipeline_vs_raw_encode", round(raw, 2),
        round(piped, 2), round(piped / raw, 3), "chunks/s", chunks=r["chunks"],
        baseline_batch_size=best_batch,
        raw_chunks_per_s_by_batch={size: round(speed, 2) for size, speed in raw_sweep.items()},
        embed_rows=settings.embed_batch_size,
        cache_speedup=round(r["first_s"] / r["cached_s"], 1),
        cached_chunks_per_s=round(cached, 1),
        freshness_docs=len(lat), freshness_rate_docs_per_s=args.rate,
        freshness_p50_ms=round(p50), freshness_p99_ms=round(p99),
        data=str(folder), quick=args.quick)


if __name__ == "__main__":
    main()
