"""Entity linking quality: B-cubed F1 of how mentions cluster into graph nodes, against gold
entity ids, on the ELEVANT benchmarks (kore50, reuters-128, spotlight).

Documents go through ragstream's pipeline into a graph on an embedded FalkorDB started here:
pass 1 links with an empty graph; the gazetteer refresh then embeds the entities and publishes
the gazetteer; pass 2 re-links every document (version 2) against it, as a worker does once the
graph knows its entities. The clusters are read back from the graph's MENTIONS spans.
- baseline: exact-string-match linking (same surface string = same node) of the model's mentions;
- project: ragstream's resolution (normalisation, type-aware keys, within-document name parts and
  acronyms, alias table, context-embedding disambiguation).
Scored over the gold mentions whose span the system found exactly (both sides found them).
Gold mentions without a knowledge-base entity (``<NIL>``, ``<NO_MAPPING>``) are not scored: they
are not one entity. The earlier scoring, which made them one cluster, is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
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


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def bcubed(pred: dict, gold: dict) -> tuple[float, float, float]:
    """B-cubed over the mentions in both maps (mention -> cluster id)."""
    common = sorted(pred.keys() & gold.keys())
    if not common:
        return 0.0, 0.0, 0.0
    pc, gc = defaultdict(set), defaultdict(set)
    for m in common:
        pc[pred[m]].add(m)
        gc[gold[m]].add(m)
    p = sum(len(pc[pred[m]] & gc[gold[m]]) / len(pc[pred[m]]) for m in common) / len(common)
    r = sum(len(pc[pred[m]] & gc[gold[m]]) / len(gc[gold[m]]) for m in common) / len(common)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


async def link_through_graph(docs, recogniser, embedder, kg: KgSettings, url: str, graph: str):
    store = GraphStore(FalkorBackend(url, graph))
    await store.setup()
    texts = [d["text"] for d in docs]
    ids = [f"{graph}-{d['id']}" for d in docs]
    resolver = Resolver(Gazetteer(), embedder.embed, kg.link_threshold)
    for version in (1, 2):
        states = await store.document_states(ids)
        linked = resolver.resolve(recogniser.recognise(texts))
        await store.apply([DocumentChange(i, version, False, states.get(i), ents,
                                          cooccurring(ents, kg.max_cooccurring))
                           for i, ents in zip(ids, linked, strict=True)])
        await refresh_gazetteer(store, embedder, kg.embed_batch)
        gazetteer = Gazetteer(await store.gazetteer(1, kg.gazetteer_max_entities),
                              await store.gazetteer_version())
        recogniser.use_gazetteer(gazetteer.patterns())
        resolver.gazetteer = gazetteer
    clusters = {}
    for doc, entity, spans in await store.mentions(ids):
        for span in spans:
            start, end = map(int, span.split(":"))
            clusters[(doc, start, end)] = entity
    await store.close()
    return clusters, ids


def exact_string_clusters(docs, ids, recogniser) -> dict:
    out = {}
    for doc_id, d, mentions in zip(ids, docs, recogniser.recognise([d["text"] for d in docs]),
                                   strict=True):
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


async def run(paths: list[Path], quick: bool) -> list[dict]:
    settings = Settings()
    kg = settings.kg
    embedder = load_embedder(settings)
    baseline_recogniser = Recogniser(gazetteer=False)
    results = []
    with harness.falkordb() as server:
        for path in paths:
            docs = load(path)[: 20 if quick else None]
            name = path.name.split(".")[0]
            project, ids = await link_through_graph(docs, Recogniser(), embedder, kg,
                                                    server.url, name)
            gold = gold_clusters(docs, ids)
            base = exact_string_clusters(docs, ids, baseline_recogniser)
            bp, br, bf = bcubed(base, gold)
            pp, pr, pf = bcubed(project, gold)
            old_gold = gold_clusters(docs, ids, nil_as_entity=True)
            nil_scoring = (bcubed(base, old_gold)[2], bcubed(project, old_gold)[2])
            results.append({"set": name, "docs": len(docs), "gold": len(gold),
                            "baseline_common": len(base.keys() & gold.keys()),
                            "project_common": len(project.keys() & gold.keys()),
                            "baseline": (bp, br, bf), "project": (pp, pr, pf),
                            "nil_scoring": nil_scoring})
    return results


def main() -> None:
    parser = harness.parser(
        __doc__, quick="the first 20 documents of each", action="append",
        data="an ELEVANT .benchmark.jsonl (repeatable; default: the three sets)")
    args = parser.parse_args()
    root = shared_data_dir() / "elevant_el_benchmarks"
    paths = args.data or [root / f"{s}.benchmark.jsonl" for s in SETS]
    results = asyncio.run(run(paths, args.quick))
    harness.table([("set", "<14"), ("mentions", ">9"), ("base P", ">8.3f"), ("base R", ">8.3f"),
                   ("base F1", ">9.3f"), ("proj P", ">8.3f"), ("proj R", ">8.3f"),
                   ("proj F1", ">9.3f")],
                  [(r["set"], r["project_common"], *r["baseline"], *r["project"])
                   for r in results])
    base = sum(r["baseline"][2] for r in results) / len(results)
    proj = sum(r["project"][2] for r in results) / len(results)
    print(f"macro B-cubed F1: baseline {base:.3f}, project {proj:.3f} ({100 * (proj - base):+.1f} points)")
    harness.report(
        "linking", "bcubed_f1_macro", round(base, 4), round(proj, 4),
        round(proj / base, 3) if base else None, "B-cubed F1",
        points=round(100 * (proj - base), 1),
        per_set={r["set"]: {"baseline": round(r["baseline"][2], 4),
                            "project": round(r["project"][2], 4),
                            "mentions_scored": r["project_common"]} for r in results},
        baseline_desc="exact surface string = same node",
        # the most any linker could gain over this baseline: a perfect score on every set
        ceiling_points=round(100 * (1 - base), 1),
        per_set_nil_as_one_entity={r["set"]: {"baseline": round(r["nil_scoring"][0], 4),
                                              "project": round(r["nil_scoring"][1], 4)}
                                   for r in results},
        scoring="gold mentions labelled <NIL>/<NO_MAPPING> are left out")


if __name__ == "__main__":
    main()
