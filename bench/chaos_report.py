"""Whole-pipeline reliability report: a clean run of a seeded Reuters history, then the same
history under chaos (SIGKILLs, a graph-store outage, an embedding-cache flush, a SIGSTOPped
worker), with hostile input (invalid events, everything twice, older versions after newer), and
with adversarial input (valid but hostile events through the gateway and straight to the
topics, search queries throughout, crashes at each step of multi-version batches), each compared
with the clean run store by store and hash by hash. See docs/reliability.md.

Baseline: the clean run. ``project`` is the fraction of stores whose end state equals the clean
run's, and ``ratio`` the same (BENCH.md's fields). Whether the run met its targets is ``pass``,
with every target missed in ``failed``. The targets: lost 0, duplicated 0, every store equal to
the clean run's, the dead letters exactly those expected, each with a reason, no restart caused
by input, every planned kill landing on a busy worker, every run converged, 0 stalled partitions,
0 workers OOM-killed or evicted, every hostile event refused or dead-lettered (or ignored) as it
should be and none accepted wrongly, every failpoint fired, search availability 1.0 (where the
gateway can search the store: not the embedded Qdrant engine, which one process owns). Wall
times are noisy on a shared machine.

``--store`` picks the vector store that every run (the clean one too) keeps fresh and compares:
embedded, pgvector (the machine's PostgreSQL, cut by the outage through a proxy) or qdrant (the
engine embedded in the reindex_qdrant worker). See testing/chaos.py.

    .venv/bin/python bench/chaos_report.py [--store embedded] [--docs 2000] [--seed 1] [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from testing import adversarial, chaos  # noqa: E402


def missed_targets(s: dict, kills: int) -> list[str]:
    """The name of every target the summary ``s`` misses."""
    targets = {
        "lost": s["lost"] == 0, "duplicated": s["duplicated"] == 0,
        "state_equal": s["state_equal"],
        "dlq_exact": s["dlq_actual"] == s["dlq_expected"] and s["dlq_without_reason"] == 0,
        "unexpected_restarts": s["unexpected_restarts"] == 0, "kills": s["kills"] >= kills,
        "converged": s["converged"], "stalled_partitions": s["stalled_partitions"] == 0,
        "worker_oom_or_evicted": s["worker_oom_or_evicted"] == 0,
        "crashes_injected": s["crashes_injected"] == s["failpoints_armed"],
    }
    if "hostile_events" in s:
        targets |= {
            "hostile_accepted_wrongly": s["hostile_accepted_wrongly"] == 0,
            "hostile_mishandled": s["hostile_mishandled"] == 0,
            "edges_accepted": s["edges_accepted"] == s["edges"],
            "dead_letters_unexplained": s["dead_letters_unexplained"] == 0,
            "search_availability": s["search_availability"] in (1.0, None),
        }
    return [name for name, met in targets.items() if not met]


def main() -> None:
    ap = harness.parser(__doc__, quick="60 documents, 200 invalid events, 10 kills, a 5 s outage",
                        data="unused: this benchmark makes its own history")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--invalid", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--outage", type=float, default=20.0)
    ap.add_argument("--store", choices=chaos.STORE_BACKENDS, default="embedded")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.invalid, args.outage = 60, 200, 5.0
    started = time.time()
    with harness.workdir(prefix="chaos-") as tmp:
        report = asyncio.run(chaos.run_all(
            args.docs, args.seed, tmp, invalid=args.invalid,
            plan=chaos.ChaosPlan(kills=args.kills, outage_s=args.outage),
            log=lambda m: print(m, file=sys.stderr, flush=True), store=args.store))
    print(chaos.format_table(report))
    for name, c in report.comparisons.items():
        for line in c.details:
            print(f"  {name}: {line}")
    if report.adversarial is not None:
        print("\nadversarial phase, by class of hostile event:")
        print(adversarial.table(report.adversarial))
        for line in report.adversarial.problems():
            print(f"  {line}")
    s = report.summary()
    failed = missed_targets(s, args.kills)
    equal = [ok for c in report.comparisons.values() for ok in c.equal.values()]
    project = sum(equal) / len(equal) if equal else 0.0
    harness.report(
        "chaos_report", "stores_equal_to_clean_run", 1.0, round(project, 3), round(project, 3),
        "fraction", **{"pass": not failed}, failed=failed, store=args.store, **s, docs=args.docs,
        seed=args.seed,
        invalid=args.invalid, events={r.name: r.events for r in report.runs},
        seconds={r.name: round(r.seconds) for r in report.runs},
        wall_s=round(time.time() - started), quick=args.quick)


if __name__ == "__main__":
    main()
