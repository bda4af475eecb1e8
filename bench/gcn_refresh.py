"""GCN refresh cost: one incremental refresh against one full inference refresh, end to end.

A synthetic co-occurrence graph (entities in topics of 50, 2% of edges across topics, 64-dim
text embeddings) is loaded into a real FalkorDB started here. A model is trained briefly and a
first version written (not timed). Then 100 entities (0.1%) get new text embeddings, and in one
run:
- project: the incremental refresh: read the dirty entities, patch the graph snapshot, recompute
  the 2-hop neighbourhood exactly with the frozen model, write only those nodes, flip the version;
- baseline: a full inference refresh with the same frozen model: read every entity and edge,
  recompute all, write all, flip.
Reports both times, their ratio (baseline/project, higher is better), and the largest absolute
difference between the two versions' embeddings over every node (read back from the store).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from ragstream.config import GcnSettings  # noqa: E402
from testing import synthetic_graph as synthetic  # noqa: E402
from ragstream.gcn.refresh import Refresher  # noqa: E402
from ragstream.gcn.store import EmbeddingStore  # noqa: E402
from ragstream.graph.backends import FalkorBackend  # noqa: E402


async def run(nodes: int, edges: int, dimension: int, dirty_count: int, workdir: Path) -> dict:
    with harness.falkordb(workdir) as server:
        backend = FalkorBackend(server.url, "bench", timeout_s=600)
        await backend.ensure_schema()
        started = time.perf_counter()
        graph = synthetic.generate(nodes, edges, dimension, seed=0)
        await synthetic.load(backend, graph)
        load_s = time.perf_counter() - started

        # inference timing does not need a good model: train briefly
        cfg = GcnSettings(epochs=3, write_batch=2_000)
        store = EmbeddingStore(backend, write_batch=cfg.write_batch)
        refresher = Refresher(store, workdir / "gcn", cfg)
        started = time.perf_counter()
        await refresher.retrain()
        setup_s = time.perf_counter() - started

        rng = np.random.default_rng(1)
        dirty = [graph.ids[i] for i in rng.choice(nodes, dirty_count, replace=False)]
        await synthetic.upsert_entities(backend, dirty, rng.normal(
            size=(dirty_count, dimension)).astype(np.float32))

        incremental = await refresher.incremental(set(dirty))
        _, after_incremental = await store.visible()
        full = await refresher.full()
        _, after_full = await store.visible()
        assert incremental.mode == "incremental" and full.mode == "full"
        assert set(after_incremental) == set(after_full)
        diff = max(float(np.abs(np.asarray(after_incremental[k]) - np.asarray(v)).max())
                   for k, v in after_full.items())
        await backend.close()
        return {"incremental_s": incremental.seconds, "full_s": full.seconds,
                "written_incremental": incremental.written, "written_full": full.written,
                "touched": incremental.touched, "max_abs_diff": diff, "load_s": load_s,
                "setup_s": setup_s}


def main() -> None:
    parser = harness.parser(__doc__, quick="10k nodes, 100k edges, 10 dirty",
                            data="unused: this benchmark makes its own graph")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--edges", type=int)
    parser.add_argument("--dirty", type=int, help="default: 0.1%% of the nodes (100 of 100k)")
    args = parser.parse_args()
    nodes = args.nodes or (10_000 if args.quick else 100_000)
    edges = args.edges or (100_000 if args.quick else 1_000_000)
    dimension = 64
    args.dirty = args.dirty or max(nodes // 1_000, 1)
    with harness.workdir(prefix="gcn-refresh-bench-") as tmp:
        r = asyncio.run(run(nodes, edges, dimension, args.dirty, tmp))
    ratio = r["full_s"] / r["incremental_s"]
    print(f"graph: {nodes} nodes, {edges} edges, {dimension}-dim features; {args.dirty} dirty; "
          f"loaded in {r['load_s']:.1f}s, first version in {r['setup_s']:.1f}s")
    harness.table([("refresh (read, compute, write back)", "<44"), ("seconds", ">10.2f"),
                   ("nodes written", ">15")], [
        ("baseline: full inference", r["full_s"], r["written_full"]),
        ("project: incremental (2-hop, exact)", r["incremental_s"], r["written_incremental"])])
    print(f"speed-up {ratio:.1f}x; max |incremental - full| over all nodes = "
          f"{r['max_abs_diff']:.2e}")
    harness.report(
        "gcn_refresh", "refresh seconds, end to end", round(r["full_s"], 3),
        round(r["incremental_s"], 3), round(ratio, 2), "s", ratio_direction="baseline/project",
        max_abs_diff=r["max_abs_diff"], target_ratio=10, target_max_abs_diff=1e-5,
        nodes=nodes, edges=edges, dimension=dimension, dirty=args.dirty,
        touched=r["touched"], written_incremental=r["written_incremental"],
        written_full=r["written_full"], quick=args.quick)


if __name__ == "__main__":
    main()
