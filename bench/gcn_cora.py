"""Link prediction on Cora: ragstream's GCN (GAE objective) against cosine of the raw features.

Cora (Planetoid ``ind.cora.*``, Python-2 pickles) is split like the GAE paper: 85% of the edges
train, 5% validate, 10% test; each held-out set is scored against as many sampled non-edges.
- project: ``ragstream.gcn.model.train`` (the code the nightly retrain runs), the GCN settings'
  defaults, features = the row-normalised bag of words plus ragstream's structural features;
- baseline: cosine similarity of the raw bag-of-words features of the two ends, no graph.
Published reference: GAE 0.910 test AUC (Kipf & Welling 2016, Variational Graph Auto-Encoders).
"""

from __future__ import annotations

import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.config import GcnSettings, Settings  # noqa: E402
from ragstream.gcn.graph import EntityGraph  # noqa: E402
from ragstream.gcn.model import embed, link_auc, split_edges, train  # noqa: E402
from torch_geometric.utils import negative_sampling  # noqa: E402

PUBLISHED_GAE_AUC = 0.910


def load_planetoid(prefix: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (n, f), undirected pairs (2, m) each once) from a Planetoid prefix."""
    def part(name: str):
        with open(f"{prefix}.{name}", "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's note on unpickling Python-2 scipy matrices
            return pickle.load(f, encoding="latin1")

    allx, tx, graph = part("allx"), part("tx"), part("graph")
    test_index = [int(line) for line in open(f"{prefix}.test.index")]
    n = max(max(graph), max(test_index)) + 1
    features = np.zeros((n, allx.shape[1]), dtype=np.float32)
    features[: allx.shape[0]] = allx.toarray()
    features[test_index] = tx.toarray()  # the test rows are stored out of order
    pairs = sorted({(min(a, b), max(a, b)) for a, nbrs in graph.items() for b in nbrs if a != b})
    return torch.from_numpy(features), torch.tensor(pairs, dtype=torch.long).t()


def run(prefix: Path, cfg: GcnSettings, seed: int) -> dict:
    features, pairs = load_planetoid(prefix)
    n = features.shape[0]
    weights = torch.ones(pairs.shape[1])
    train_pairs, train_weights, held = split_edges(pairs, weights, 0.15, seed)
    validation, test = held[:, : held.shape[1] // 3], held[:, held.shape[1] // 3:]
    everything = torch.cat([pairs, pairs.flip(0)], dim=1)
    torch.manual_seed(seed)
    test_negatives = negative_sampling(everything, n, test.shape[1])

    normalised = features / features.sum(dim=1, keepdim=True).clamp(min=1)
    graph = EntityGraph([str(i) for i in range(n)], normalised, train_pairs, train_weights)
    started = time.perf_counter()
    result = train(graph.tensors(), cfg.hidden_dim, cfg.dimension, epochs=cfg.epochs,
                   lr=cfg.learning_rate, dropout=cfg.dropout, held_out=validation, seed=seed,
                   device=torch.device("cpu"))
    seconds = time.perf_counter() - started
    z = embed(result.model, graph.tensors(), torch.ones(n, dtype=torch.bool), torch.device("cpu"))
    project = link_auc(z, test, test_negatives)
    unit = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
    baseline = link_auc(unit, test, test_negatives)  # inner product of unit rows = cosine
    return {"project": project, "baseline": baseline, "validation_auc": result.validation_auc,
            "nodes": n, "edges": int(pairs.shape[1]), "test_edges": int(test.shape[1]),
            "train_seconds": seconds}


def main() -> None:
    parser = harness.parser(__doc__, quick="fewer epochs (smoke check)",
                            data="a Planetoid prefix (default: shared ind.cora)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prefix = args.data or shared_data_dir() / "planetoid_citation" / "ind.cora"
    cfg = Settings().gcn
    if args.quick:
        cfg = cfg.model_copy(update={"epochs": 50})
    r = run(prefix, cfg, args.seed)
    harness.table([("method", "<40"), ("test ROC AUC", ">14.4f")], [
        ("baseline: cosine of raw features", r["baseline"]),
        ("project: ragstream GCN (GAE objective)", r["project"]),
        ("published GAE (Kipf & Welling 2016)", PUBLISHED_GAE_AUC)])
    print(f"{r['nodes']} nodes, {r['edges']} edges, {r['test_edges']} test edges, "
          f"{cfg.epochs} epochs in {r['train_seconds']:.1f}s")
    harness.report(
        "gcn_cora", "link prediction ROC AUC (test edges)", round(r["baseline"], 4),
        round(r["project"], 4), round(r["project"] / r["baseline"], 4), "AUC",
        target=0.90, published_gae_auc=PUBLISHED_GAE_AUC,
        published_source="Kipf & Welling 2016, Variational Graph Auto-Encoders, Table 1",
        validation_auc=round(r["validation_auc"], 4), nodes=r["nodes"], edges=r["edges"],
        test_edges=r["test_edges"], epochs=cfg.epochs, hidden_dim=cfg.hidden_dim,
        dimension=cfg.dimension, seed=args.seed, data=str(prefix), quick=args.quick)


if __name__ == "__main__":
    main()
