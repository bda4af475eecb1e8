"""Retrieval quality on BEIR SciFact, with the corpus ingested THROUGH THE PIPELINE: document
events into Kafka, the embedding and reindex workers, then the store (``--store``: the embedded
index, pgvector or Qdrant). The test queries then run keyword only, dense only and hybrid (RRF)
through the query API, one result per document. The keyword ranking is the store's: BM25 in the
embedded index and Qdrant, PostgreSQL full text (ts_rank, no IDF) in pgvector.

Published reference points: BM25 nDCG@10 0.665 (BEIR paper, Thakur et al. 2021, Table 2) and
all-MiniLM-L6-v2 0.645 (MTEB leaderboard, SciFact). The JSON line has hybrid as ``project`` and
the best single method measured in this run as ``baseline``.

``--rerank`` adds the re-ranking stage over the hybrid candidates (ragstream.serving.rerank) and
puts hybrid as ``baseline`` and re-ranked as ``project``. The cross-encoder is
``--rerank-model`` (a local model directory or a package that ships one), else
``RAGSTREAM_SERVING_RERANKER_MODEL``, else the stand-in built from the shipped MiniLM weights
(testing/cross_encoder.py): no package ships a trained cross-encoder, and the stand-in's head is
untrained, so its figure measures the stage's cost, not a re-ranker's quality (the JSON says
which model ran).

    .venv/bin/python bench/scifact.py [--quick] [--data BEIR_FOLDER] [--store NAME]
        [--rerank [--rerank-model DIR] [--rerank-top-k N]]
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.retrieval_support import Beir, load_beir, pipeline, services  # noqa: E402
from producers.events import document_upserted  # noqa: E402
from ragstream.publisher import Publisher  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.embedders import MiniLMEmbedder  # noqa: E402
from ragstream.vectorstores.search import FusionWeights, SearchRequest, Searcher  # noqa: E402
from testing.cross_encoder import build_standin  # noqa: E402

METHODS = {"bm25": FusionWeights(dense=0, sparse=1), "dense": FusionWeights(dense=1, sparse=0),
           "hybrid": FusionWeights(dense=1, sparse=1)}
PUBLISHED = {"bm25_ndcg10_beir_paper": 0.665, "minilm_ndcg10_mteb": 0.645}


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def recall_at_100(ranked: list[str], relevant: dict[str, int]) -> float:
    hits = {d for d in ranked[:100] if relevant.get(d, 0) > 0}
    return len(hits) / sum(1 for g in relevant.values() if g > 0)


def subset(beir: Beir, docs: int, queries: int, seed: int = 13) -> Beir:
    """A smaller corpus that keeps every relevant document of the kept queries."""
    rng = random.Random(seed)
    kept_q = sorted(rng.sample(sorted(beir.qrels), queries))
    wanted = {d for q in kept_q for d in beir.qrels[q]}
    others = [d for d in beir.corpus if d not in wanted]
    wanted |= set(rng.sample(others, max(docs - len(wanted), 0)))
    return Beir({d: beir.corpus[d] for d in beir.corpus if d in wanted},
                {q: beir.queries[q] for q in kept_q}, {q: beir.qrels[q] for q in kept_q})


async def ingest(settings, embedder, beir: Beir, searcher: Searcher) -> float:
    started = time.perf_counter()
    async with pipeline(settings, embedder):
        async with Publisher(settings) as pub:
            await pub.publish(document_upserted(d, text, version=1, title=title)
                              for d, (title, text) in beir.corpus.items())
        while True:
            if searcher.store.counts().documents >= len(beir.corpus):
                return time.perf_counter() - started
            await asyncio.sleep(0.5)


def evaluate(searcher: Searcher, beir: Beir) -> dict[str, dict[str, float]]:
    out = {}
    for name, weights in METHODS.items():
        ndcg = recall = 0.0
        for q, text in beir.queries.items():
            ranked = [h.doc_id for h in searcher.search(text, k=100, weights=weights,
                                                        per_document=True)]
            ndcg += ndcg_at_10(ranked, beir.qrels[q])
            recall += recall_at_100(ranked, beir.qrels[q])
        out[name] = {"ndcg10": ndcg / len(beir.queries), "recall100": recall / len(beir.queries)}
    return out


def evaluate_reranked(searcher: Searcher, beir: Beir, top_k: int) -> tuple[dict, list[float]]:
    """nDCG@10 of the hybrid candidates re-ranked (per document, ``top_k`` deep), and the
    seconds of each re-ranked batch of 16 queries (one model call each)."""
    ndcg, seconds, outcomes = 0.0, [], []
    items = list(beir.queries.items())
    for start in range(0, len(items), 16):
        part = items[start:start + 16]
        started = time.perf_counter()
        results = searcher.search_many([SearchRequest(text, k=top_k, per_document=True,
                                                      rerank=True) for _, text in part])
        seconds.append(time.perf_counter() - started)
        for (q, _), result in zip(part, results, strict=True):
            outcomes.append(result.rerank)
            ndcg += ndcg_at_10([h.doc_id for h in result.hits], beir.qrels[q])
    fallbacks = sum(o != "reranked" for o in outcomes)
    return {"ndcg10": ndcg / len(items), "fallbacks": fallbacks}, seconds


def reranker_model(given: Path | None, folder: Path) -> tuple[str, bool]:
    """The cross-encoder to run, and whether it is the untrained stand-in."""
    named = str(given) if given else os.environ.get("RAGSTREAM_SERVING_RERANKER_MODEL", "")
    if named:
        return named, False
    return str(build_standin(folder / "standin-cross-encoder")), True


def run_reranked(settings, embedder, beir: Beir, args, tmp: Path, scores: dict) -> dict:
    """The JSON fields of the re-ranked run, on the store the hybrid run read."""
    model, standin = reranker_model(args.rerank_model, tmp)
    reranking = settings.model_copy(update={"serving": settings.serving.model_copy(
        update={"reranker": "cross-encoder", "reranker_model": model,
                "rerank_top_k": args.rerank_top_k, "rerank_budget_ms": 600_000.0,
                "result_cache_entries": 0})})
    searcher = Searcher(reranking, embedder)
    try:
        searcher.serving.rerank.warm()
        reranked, seconds = evaluate_reranked(searcher, beir, args.rerank_top_k)
    finally:
        searcher.close()  # its own connection to the store: the caller drops the store
    return {"reranked_ndcg10": round(reranked["ndcg10"], 4),
            "rerank_gain": round(reranked["ndcg10"] - scores["hybrid"]["ndcg10"], 4),
            "rerank_model": model, "rerank_model_is_untrained_standin": standin,
            "rerank_top_k": args.rerank_top_k, "rerank_fallbacks": reranked["fallbacks"],
            "rerank_batch16_p50_ms": round(statistics.median(seconds) * 1000, 1),
            "target_rerank_gain": 0.02}


def main() -> None:
    parser = harness.parser(
        __doc__, quick="60 queries over a 400-document subset (scores are not comparable)",
        data="a BEIR folder")
    parser.add_argument("--store", default="embedded", choices=("embedded", "pgvector", "qdrant"),
                        help="the store the pipeline keeps fresh and the queries read")
    parser.add_argument("--rerank", action="store_true",
                        help="also re-rank the hybrid candidates with a cross-encoder")
    parser.add_argument("--rerank-model", type=Path,
                        help="a local cross-encoder directory (default: the configured one, "
                             "else the untrained stand-in)")
    parser.add_argument("--rerank-top-k", type=int,
                        help="hybrid candidates the cross-encoder scores per query "
                             "(default 50; 20 with --quick)")
    args = parser.parse_args()
    folder = args.data or shared_data_dir() / "scifact_beir"
    beir = load_beir(folder)
    if args.quick:
        beir = subset(beir, docs=400, queries=60)
    args.rerank_top_k = args.rerank_top_k or (20 if args.quick else 50)
    embedder = MiniLMEmbedder()
    rerank: dict = {}
    with services(search_candidates=300, store_search=args.store) as settings, \
            tempfile.TemporaryDirectory(prefix="ragstream-rerank-") as tmp:
        searcher = Searcher(settings, embedder)
        try:
            ingest_s = asyncio.run(ingest(settings, embedder, beir, searcher))
            scores = evaluate(searcher, beir)
            if args.rerank:
                rerank = run_reranked(settings, embedder, beir, args, Path(tmp), scores)
        finally:
            searcher.store.drop()
            searcher.serving.close()

    print(f"SciFact: {len(beir.corpus)} documents ingested through the pipeline in "
          f"{ingest_s:.0f} s; {len(beir.queries)} test queries")
    rows = [(name, s["ndcg10"], s["recall100"]) for name, s in scores.items()]
    if rerank:
        note = ("(untrained stand-in: not a quality figure)"
                if rerank["rerank_model_is_untrained_standin"] else f"({rerank['rerank_model']})")
        rows.append(("reranked", rerank["reranked_ndcg10"], float("nan"), note))
    harness.table([("method", "10"), ("nDCG@10", ">8.3f"), ("Recall@100", ">11.3f")], rows,
                  sep=" ")
    best = max(("bm25", "dense"), key=lambda m: scores[m]["ndcg10"])
    hybrid = scores["hybrid"]["ndcg10"]
    baseline, baseline_method = scores[best]["ndcg10"], best
    project = hybrid
    if rerank:
        print(f"re-ranking: {rerank['rerank_gain']:+.4f} nDCG@10 over hybrid (target +0.02), "
              f"{rerank['rerank_top_k']} candidates a query, a batch of 16 queries in "
              f"{rerank['rerank_batch16_p50_ms']:.0f} ms (p50), {rerank['rerank_fallbacks']} "
              "fallbacks")
        baseline, baseline_method, project = hybrid, "hybrid", rerank["reranked_ndcg10"]
    harness.report(
        "scifact", "ndcg@10", round(baseline, 4), round(project, 4),
        round(project / baseline, 3), "nDCG@10", baseline_method=baseline_method,
        **{f"{m}_{k}": round(v, 4) for m, s in scores.items() for k, v in s.items()},
        **rerank, **PUBLISHED, target_hybrid_ndcg10=0.69, documents=len(beir.corpus),
        queries=len(beir.queries), ingest_s=round(ingest_s, 1), quick=args.quick,
        store=args.store)


if __name__ == "__main__":
    main()
