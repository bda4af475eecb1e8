"""What tracing costs the worker runtime: a noop worker over the same pre-produced events on the
same Tansu broker, with tracing off (the default: the baseline) and on, in one run.

Every event carries its own traceparent, as if each came from a different gateway request: the
worst case, one CONSUMER span per event. Spans go to a BatchSpanProcessor with an exporter that
drops them, so the figure is the cost inside the worker, not the network's. Runs alternate
off/on (``--rounds``) so that drift on a shared machine hits both alike; the best of each is
reported. Each traced round must export exactly one span per event: a run whose spans were
dropped (a full span queue) or never made did not measure tracing, and exits non-zero with no
JSON line.

    .venv/bin/python bench/tracing_overhead.py [--events 50000] [--rounds 2] [--quick]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from bench import harness  # noqa: E402
from bench.runtime_overhead import BATCH, TOPIC, produce, runtime_loop  # noqa: E402
from ragstream import tracing  # noqa: E402
from ragstream.transport.kafka import ensure_topics  # noqa: E402


class Discard(SpanExporter):
    def __init__(self):
        self.spans = 0

    def export(self, spans):
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


async def main() -> None:
    parser = harness.parser(__doc__, quick="10k events, 2 rounds")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n, rounds = (10_000, 2) if args.quick else (args.events, args.rounds)

    off, on, exported = [], [], []
    with harness.tansu() as broker:
        try:
            settings = harness.kafka_settings(broker, batch_max_records=BATCH,
                                              batch_timeout_ms=200)
            await ensure_topics(settings, [TOPIC, TOPIC + ".dlq"], 6)
            await produce(settings, n, traced=True)
            for r in range(rounds):
                tracing.shutdown()
                off.append((await runtime_loop(settings, n, f"bench.off{r}"))[0])
                exporter = Discard()
                tracing.configure(exporter, service_name="bench")
                on.append((await runtime_loop(settings, n, f"bench.on{r}"))[0])
                tracing.shutdown()  # flushes: every span reaches the exporter
                exported.append(exporter.spans)
        finally:
            tracing.shutdown()
    if exported != [n] * rounds:
        sys.exit(f"spans exported per traced round {exported}, expected {n:,} (one per event) "
                 f"in each of {rounds}: the on-runs did not measure what they claim")

    baseline, project = max(off), max(on)
    harness.table([("runtime, noop worker", "<40"), ("events/s", ">12,.0f")], [
        ("tracing off (default)", baseline, f"(baseline) {[round(x) for x in off]}"),
        ("tracing on, one trace per event", project, f"(project) {[round(x) for x in on]}")])
    print(f"ratio on/off = {project / baseline:.2f}; {n:,} events x {rounds} rounds; "
          f"{sum(exported):,} spans exported, one per event")
    harness.report("tracing_overhead", "events_per_s", round(baseline), round(project),
                   round(project / baseline, 3), "events/s", events=n, rounds=rounds,
                   batch=BATCH, spans_exported=sum(exported), off_runs=[round(x) for x in off],
                   on_runs=[round(x) for x in on])


if __name__ == "__main__":
    asyncio.run(main())
