"""Entity linking quality: B-cubed F1 of how mentions cluster into graph nodes, against gold
entity ids, on the ELEVANT benchmarks (kore50, reuters-128, spotlight).

The graph starts with what a deployment would already know, built from other data than the test
documents: Reuters-21578 articles (``--source-docs``) linked through ragstream's pipeline into a
graph on an embedded FalkorDB started here, then the gazetteer refresh (entity embeddings, a new
gazetteer version). reuters-128 was drawn from Reuters-21578, so an article that shares any run of
8 words with a document of the sets run is left out of the source. The test documents are then
linked once against that gazetteer, as a worker does, and their clusters read back from the
graph's MENTIONS spans.
- baseline: exact-string-match linking (same surface string = same node) of the statistical NER's
  mentions;
- project: ragstream's recogniser (the gazetteer's ruler before the NER) and resolution
  (normalisation, type-aware keys, within-document name parts and acronyms, alias table,
  context-embedding disambiguation).
Both are scored on the same mentions: every gold mention with a knowledge-base entity. A gold
mention whose exact span a side did not find is a cluster of its own on that side, so a side
gains nothing by finding fewer mentions. Gold mentions without a knowledge-base entity
(``<NIL>``, ``<NO_MAPPING>``) are not one entity and are not scored; the scoring that made them
one cluster is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from producers import reuters  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.embedders import load_embedder  # noqa: E402
from ragstream.graph.backends import FalkorBackend  # noqa: E402
from ragstream.config import KgSettings, Settings  # noqa: E402
from ragstream.graph.model import DocumentChange, cooccurring  # noqa: E402
from ragstream.graph.store import GraphStore  # noqa: E402
from ragstream.nlp.gazetteer import Gazetteer  # noqa: E402
from ragstream.nlp.recognise import Recogniser  # noqa: E402
from ragstream.nlp.refresh import refresh_gazetteer  # noqa: E402
from ragstream.nlp.resolve import Resolver  # noqa: E402

SETS = ("kore50", "reuters-128", "spotlight")
BATCH = 100  # documents per resolve + apply, as a worker's consumed batch
SHINGLE = 8  # words: a run this long shared with a test document marks an article as one of them


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def bcubed(pred: dict, gold: dict, over: set | None = None) -> tuple[float, float, float]:
    """B-cubed over the gold mentions (``over``: a subset of them); a mention that ``pred``
    (mention -> cluster id) lacks is a cluster of its own."""
    scored = sorted(gold.keys() if over is None else over)
    if not scored:
        return 0.0, 0.0, 0.0
    cluster = {m: pred.get(m, ("missed", m)) for m in scored}
    pc, gc = defaultdict(set), defaultdict(set)
    for m in scored:
        pc[cluster[m]].add(m)
        gc[gold[m]].add(m)
    p = sum(len(pc[cluster[m]] & gc[gold[m]]) / len(pc[cluster[m]]) for m in scored)
    r = sum(len(pc[cluster[m]] & gc[gold[m]]) / len(gc[gold[m]]) for m in scored)
    p, r = p / len(scored), r / len(scored)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


async def link(store: GraphStore, docs: list[tuple[str, str]], recogniser: Recogniser,
               resolver: Resolver, kg: KgSettings) -> None:
    """Link ``(id, text)`` documents into the graph, ``BATCH`` at a time, as a worker does."""
    for i in range(0, len(docs), BATCH):
        ids, texts = zip(*docs[i:i + BATCH], strict=True)
        states = await store.document_states(ids)
        linked = resolver.resolve(recogniser.recognise(texts))
        await store.apply([DocumentChange(d, 1, False, states.get(d), ents,
                                          cooccurring(ents, kg.max_cooccurring))
                           for d, ents in zip(ids, linked, strict=True)])


def shingles(text: str) -> set[tuple[str, ...]]:
    # words, case-folded: reuters-128 re-spaced and re-punctuated the articles it took
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def source_articles(test_texts: list[str], limit: int) -> tuple[list[tuple[str, str]], int]:
    """The first ``limit`` Reuters-21578 articles that share no run of words with a test
    document, and how many were left out for sharing one."""
    seen = set().union(*map(shingles, test_texts))
    kept, dropped = [], 0
    for a in reuters.load():
        text = f"{a.title}\n\n{a.text}"
        if shingles(text) & seen:
            dropped += 1
            continue
        kept.append((f"src-{a.doc_id}", text))
        if len(kept) == limit:
            break
    return kept, dropped


async def source_gazetteer(store: GraphStore, source, embedder, kg: KgSettings) -> Gazetteer:
    """Link the source articles into an empty graph, refresh, and load the gazetteer as the
    worker loads it (entities mentioned by at least ``gazetteer_min_docs`` documents)."""
    await link(store, source, Recogniser(), Resolver(Gazetteer(), embedder.embed,
                                                     kg.link_threshold), kg)
    await refresh_gazetteer(store, embedder, kg.embed_batch)
    return Gazetteer(await store.gazetteer(kg.gazetteer_min_docs, kg.gazetteer_max_entities),
                     await store.gazetteer_version(), await store.blocked_merges())


async def graph_clusters(store: GraphStore, ids: list[str]) -> dict:
    clusters = {}
    for doc, entity, spans in await store.mentions(ids):
        for span in spans:
            start, end = map(int, span.split(":"))
            clusters[(doc, start, end)] = entity
    return clusters


def resolved_clusters(ids, linked) -> dict:
    return {(doc_id, start, end): e.id for doc_id, ents in zip(ids, linked, strict=True)
            for e in ents for start, end in e.spans}


def exact_string_clusters(ids, mentions_per_doc) -> dict:
    out = {}
    for doc_id, mentions in zip(ids, mentions_per_doc, strict=True):
        for m in mentions:
            out[(doc_id, m.start, m.end)] = m.text
    return out


# Gold labels without a knowledge-base entity. They are not one entity: scoring "<NIL>" as a
# cluster made every unlinkable mention of reuters-128 (257 of 880: small firms, people) the same
# entity, so any system that kept them apart lost recall it could never earn back.
NO_ENTITY = frozenset({"<NIL>", "<NO_MAPPING>"})


def gold_clusters(docs, ids, nil_as_entity: bool = False) -> dict:
    """Mention -> gold entity id. ``nil_as_entity``: the earlier scoring, kept for comparison."""
    return {(doc_id, l["span"][0], l["span"][1]): l["entity_id"]
            for doc_id, d in zip(ids, docs) for l in d["labels"]
            if l.get("entity_id") and (nil_as_entity or l["entity_id"] not in NO_ENTITY)}


async def run(paths: list[Path], quick: bool, source_docs: int) -> tuple[list[dict], dict]:
    settings = Settings()
    kg = settings.kg
    embedder = load_embedder(settings)
    baseline_recogniser = Recogniser(gazetteer=False)
    sets = {path.name.split(".")[0]: load(path) for path in paths}
    # every document of the sets run, not only the --quick ones: none may reach the source
    source, dropped = source_articles([d["text"] for docs in sets.values() for d in docs],
                                      source_docs)
    results = []
    with harness.falkordb() as server:
        store = GraphStore(FalkorBackend(server.url, "linking"))
        await store.setup()
        gazetteer = await source_gazetteer(store, source, embedder, kg)
        recogniser = Recogniser()
        recogniser.use_gazetteer(gazetteer.patterns())
        resolver = Resolver(gazetteer, embedder.embed, kg.link_threshold)
        for name, docs in sets.items():
            docs = docs[: 20 if quick else None]
            ids = [f"{name}-{d['id']}" for d in docs]
            await link(store, [(i, d["text"]) for i, d in zip(ids, docs)], recogniser,
                       resolver, kg)
            project = await graph_clusters(store, ids)
            base_mentions = baseline_recogniser.recognise([d["text"] for d in docs])
            base = exact_string_clusters(ids, base_mentions)
            # what the gazetteer adds: the same resolution with an empty graph
            alone = resolved_clusters(ids, Resolver(Gazetteer(), embedder.embed,
                                                    kg.link_threshold).resolve(base_mentions))
            gold = gold_clusters(docs, ids)
            both = gold.keys() & base.keys() & project.keys()
            old_gold = gold_clusters(docs, ids, nil_as_entity=True)
            results.append({
                "set": name, "docs": len(docs), "gold": len(gold),
                "baseline_found": len(gold.keys() & base.keys()),
                "project_found": len(gold.keys() & project.keys()),
                "both_found": len(both),
                "baseline": bcubed(base, gold), "project": bcubed(project, gold),
                "no_gazetteer": bcubed(alone, gold)[2],
                "on_both_found": (bcubed(base, gold, both)[2], bcubed(project, gold, both)[2]),
                "nil_scoring": (bcubed(base, old_gold)[2], bcubed(project, old_gold)[2])})
        await store.close()
    return results, {"source_docs": len(source), "source_left_out": dropped,
                     "gazetteer_entities": len(gazetteer.entries)}


def main() -> None:
    parser = harness.parser(
        __doc__, quick="the first 20 documents of each, a gazetteer from 300 articles",
        action="append",
        data="an ELEVANT .benchmark.jsonl (repeatable; default: the three sets)")
    parser.add_argument("--source-docs", type=int, default=2000,
                        help="Reuters-21578 articles the gazetteer is built from")
    args = parser.parse_args()
    root = shared_data_dir() / "elevant_el_benchmarks"
    paths = args.data or [root / f"{s}.benchmark.jsonl" for s in SETS]
    results, source = asyncio.run(run(paths, args.quick, 300 if args.quick else args.source_docs))
    harness.table([("set", "<14"), ("gold", ">6"), ("found b/p", ">10"), ("base P", ">8.3f"),
                   ("base R", ">8.3f"), ("base F1", ">9.3f"), ("proj P", ">8.3f"),
                   ("proj R", ">8.3f"), ("proj F1", ">9.3f")],
                  [(r["set"], r["gold"], f"{r['baseline_found']}/{r['project_found']}",
                    *r["baseline"], *r["project"]) for r in results])
    base = sum(r["baseline"][2] for r in results) / len(results)
    proj = sum(r["project"][2] for r in results) / len(results)
    print(f"macro B-cubed F1: baseline {base:.3f}, project {proj:.3f} "
          f"({100 * (proj - base):+.1f} points); gazetteer of {source['gazetteer_entities']} "
          f"entities from {source['source_docs']} Reuters-21578 articles "
          f"({source['source_left_out']} left out as test documents)")
    harness.report(
        "linking", "bcubed_f1_macro", round(base, 4), round(proj, 4),
        round(proj / base, 3) if base else None, "B-cubed F1",
        points=round(100 * (proj - base), 1),
        per_set={r["set"]: {"baseline": round(r["baseline"][2], 4),
                            "project": round(r["project"][2], 4),
                            "project_no_gazetteer": round(r["no_gazetteer"], 4),
                            "gold_mentions": r["gold"], "baseline_found": r["baseline_found"],
                            "project_found": r["project_found"]} for r in results},
        baseline_desc="exact surface string = same node, over the statistical NER's mentions",
        scoring="every gold mention with a KB entity; one a side did not find is a singleton",
        # the most any linker could gain over this baseline: a perfect score on every set
        ceiling_points=round(100 * (1 - base), 1),
        gazetteer=source,
        per_set_on_mentions_both_found={
            r["set"]: {"mentions": r["both_found"], "baseline": round(r["on_both_found"][0], 4),
                       "project": round(r["on_both_found"][1], 4)} for r in results},
        per_set_nil_as_one_entity={r["set"]: {"baseline": round(r["nil_scoring"][0], 4),
                                              "project": round(r["nil_scoring"][1], 4)}
                                   for r in results},
        quick=args.quick)


if __name__ == "__main__":
    main()
