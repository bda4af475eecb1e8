"""Whole-pipeline reliability report: a clean run of a seeded Reuters history, then the same
history under chaos (SIGKILLs, a graph-store outage, an embedding-cache flush, a SIGSTOPped
worker) and with hostile input (invalid events, everything twice, older versions after newer),
each compared with the clean run store by store and hash by hash. See docs/reliability.md.

Baseline: the clean run. ``project`` is the fraction of stores whose end state equals the clean
run's (1.0 is the target); ``ratio`` is the same. Wall times are noisy on a shared machine.

    .venv/bin/python bench/chaos_report.py [--docs 2000] [--seed 1] [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from testing import chaos  # noqa: E402


def main() -> None:
    ap = harness.parser(__doc__, quick="60 documents, 200 invalid events, 10 kills, a 5 s outage",
                        data="unused: this benchmark makes its own history")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--invalid", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--outage", type=float, default=20.0)
    args = ap.parse_args()
    if args.quick:
        args.docs, args.invalid, args.outage = 60, 200, 5.0
    started = time.time()
    with harness.workdir(prefix="chaos-") as tmp:
        report = asyncio.run(chaos.run_all(
            args.docs, args.seed, tmp, invalid=args.invalid,
            plan=chaos.ChaosPlan(kills=args.kills, outage_s=args.outage),
            log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(chaos.format_table(report))
    for name, c in report.comparisons.items():
        for line in c.details:
            print(f"  {name}: {line}")
    s = report.summary()
    equal = [ok for c in report.comparisons.values() for ok in c.equal.values()]
    project = sum(equal) / len(equal) if equal else 0.0
    harness.report(
        "chaos_report", "stores_equal_to_clean_run", 1.0, round(project, 3), round(project, 3),
        "fraction", **s, docs=args.docs, seed=args.seed, invalid=args.invalid,
        events={r.name: r.events for r in report.runs},
        seconds={r.name: round(r.seconds) for r in report.runs},
        wall_s=round(time.time() - started), quick=args.quick)


if __name__ == "__main__":
    main()
