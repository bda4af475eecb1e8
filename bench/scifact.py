"""Retrieval quality on BEIR SciFact, with the corpus ingested THROUGH THE PIPELINE: document
events into Kafka, the embedding and reindex workers, then the store (``--store``: the embedded
index, pgvector or Qdrant). The test queries then run keyword only, dense only and hybrid (RRF)
through the query API, one result per document. The keyword ranking is the store's: BM25 in the
embedded index and Qdrant, PostgreSQL full text (ts_rank_cd, no IDF) in pgvector.

Published reference points: BM25 nDCG@10 0.665 (BEIR paper, Thakur et al. 2021, Table 2) and
all-MiniLM-L6-v2 0.645 (MTEB leaderboard, SciFact). The JSON line has hybrid as ``project`` and
the best single method measured in this run as ``baseline``.

    .venv/bin/python bench/scifact.py [--quick] [--data BEIR_FOLDER] [--store NAME]
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from bench.retrieval_support import Beir, load_beir, pipeline, services  # noqa: E402
from producers.events import document_upserted  # noqa: E402
from ragstream.publisher import Publisher  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.embedders import MiniLMEmbedder  # noqa: E402
from ragstream.vectorstores.search import FusionWeights, Searcher  # noqa: E402

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


def main() -> None:
    parser = harness.parser(
        __doc__, quick="60 queries over a 400-document subset (scores are not comparable)",
        data="a BEIR folder")
    parser.add_argument("--store", default="embedded", choices=("embedded", "pgvector", "qdrant"),
                        help="the store the pipeline keeps fresh and the queries read")
    args = parser.parse_args()
    folder = args.data or shared_data_dir() / "scifact_beir"
    beir = load_beir(folder)
    if args.quick:
        beir = subset(beir, docs=400, queries=60)
    embedder = MiniLMEmbedder()
    with services(search_candidates=300, store_search=args.store) as settings:
        searcher = Searcher(settings, embedder)
        try:
            ingest_s = asyncio.run(ingest(settings, embedder, beir, searcher))
            scores = evaluate(searcher, beir)
        finally:
            searcher.store.drop()

    print(f"SciFact: {len(beir.corpus)} documents ingested through the pipeline in "
          f"{ingest_s:.0f} s; {len(beir.queries)} test queries")
    harness.table([("method", "10"), ("nDCG@10", ">8.3f"), ("Recall@100", ">11.3f")],
                  [(name, s["ndcg10"], s["recall100"]) for name, s in scores.items()], sep=" ")
    best = max(("bm25", "dense"), key=lambda m: scores[m]["ndcg10"])
    hybrid = scores["hybrid"]["ndcg10"]
    harness.report(
        "scifact", "ndcg@10", round(scores[best]["ndcg10"], 4), round(hybrid, 4),
        round(hybrid / scores[best]["ndcg10"], 3), "nDCG@10", baseline_method=best,
        **{f"{m}_{k}": round(v, 4) for m, s in scores.items() for k, v in s.items()},
        **PUBLISHED, target_hybrid_ndcg10=0.69, documents=len(beir.corpus),
        queries=len(beir.queries), ingest_s=round(ingest_s, 1), quick=args.quick,
        store=args.store)


if __name__ == "__main__":
    main()
