"""ragstream's runtime against its peers: events/s and consumer CPU per event on one stream.

The same pre-produced stream (small document events, 6 partitions) on one embedded Tansu is read
in full by each of, one process at a time and each with a fresh consumer group:
- ragstream: the real WorkerRuntime with a worker that does nothing (the project);
- FastStream 0.7: a batch subscriber on its aiokafka broker, acking (committing) after each batch;
- Quix Streams 3: an Application that checkpoints (commits) every 500 messages;
- raw: a bare aiokafka ``getmany`` loop.
Every one decodes and validates each record with ragstream's ``schemas.catalogue.decode`` and
commits once per 500 records (bench/peer_consumers.py says how each is set up). Time and CPU run
from the first records in hand to the last event validated. The runtimes take turns over
``--rounds`` rounds, in a rotating order, so the shared machine's drifting load hits all alike;
each one's best round is reported. ``baseline`` is the fastest peer (FastStream or Quix);
``ratio`` is ragstream / that peer and ``ratio_vs_raw`` ragstream / the raw loop.

FastStream and Quix run in their own environment, bench/.venv-peers, made here on the first run
(Quix pins pydantic and confluent-kafka below the project's).

    .venv/bin/python bench/peers.py [--events 200000] [--rounds 2] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import harness  # noqa: E402
from bench.runtime_overhead import BATCH, TOPIC, produce  # noqa: E402
from ragstream.transport.kafka import ensure_topics  # noqa: E402

PEERS_VENV = BENCH / ".venv-peers"
PEER_PACKAGES = ("faststream[kafka]==0.7.8", "quixstreams==3.28.1")
CONSUMERS = BENCH / "peer_consumers.py"
# runtime -> (label, the environment it runs in)
RUNTIMES = {
    "ragstream": ("ragstream WorkerRuntime, noop worker", "project"),
    "faststream": ("FastStream 0.7 batch subscriber, ack", "peers"),
    "quix": ("Quix Streams 3, commit_every=500", "peers"),
    "raw": ("raw aiokafka getmany loop", "project"),
}
PEERS = ("faststream", "quix")


def peers_python() -> Path:
    """The peers' interpreter, its environment made on first use."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {PEERS_VENV} ({', '.join(PEER_PACKAGES)})", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def consume(runtime: str, python: Path, bootstrap: str, group: str, n: int) -> dict:
    """One consumer process over the whole stream; its JSON line."""
    argv = [str(python), str(CONSUMERS), runtime, "--bootstrap", bootstrap, "--topic", TOPIC,
            "--group", group, "--events", str(n), "--batch", str(BATCH)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    if done.returncode != 0:
        raise SystemExit(f"{runtime} consumer failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["events"] < n:
        raise SystemExit(f"{runtime} saw {result['events']} of {n} events")
    return result


async def prepare(broker, n: int) -> None:
    settings = harness.kafka_settings(broker)
    await ensure_topics(settings, [TOPIC, TOPIC + ".dlq"], 6)
    await produce(settings, n)


def main() -> None:
    p = harness.parser(__doc__, quick="20k events, 1 round")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    n, rounds = (20_000, 1) if args.quick else (args.events, args.rounds)
    pythons = {"project": Path(sys.executable), "peers": peers_python()}

    runs: dict[str, list[dict]] = {name: [] for name in RUNTIMES}
    with harness.tansu() as broker:
        asyncio.run(prepare(broker, n))
        order = list(RUNTIMES)
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                python = pythons[RUNTIMES[name][1]]
                runs[name].append(consume(name, python, broker.bootstrap, f"peers.{name}.{r}", n))

    eps = {name: max(x["events"] / x["seconds"] for x in rs) for name, rs in runs.items()}
    cpu_us = {name: min(x["cpu_s"] / x["events"] for x in rs) * 1e6 for name, rs in runs.items()}
    fastest = max(PEERS, key=eps.get)
    project = eps["ragstream"]
    harness.table([("runtime", "<40"), ("events/s", ">12,.0f"), ("CPU us/event", ">14.1f"),
                   ("vs ragstream", ">14.2f")],
                  [(RUNTIMES[name][0], eps[name], cpu_us[name], eps[name] / project)
                   + (("(project)",) if name == "ragstream" else
                      ("(baseline)",) if name == fastest else ())
                   for name in RUNTIMES])
    print(f"ratio ragstream/{fastest} = {project / eps[fastest]:.2f} (target >= 1.0); "
          f"ragstream/raw = {project / eps['raw']:.2f} (target >= 0.7); {n:,} events, "
          f"batch {BATCH}, best of {rounds} round(s); CPU is the consumer process's, all threads")
    harness.report(
        "peers", "events_per_s", round(eps[fastest]), round(project),
        round(project / eps[fastest], 3), "events/s", baseline_is=fastest,
        ratio_vs_raw=round(project / eps["raw"], 3),
        events_per_s={name: round(v) for name, v in eps.items()},
        cpu_us_per_event={name: round(v, 2) for name, v in cpu_us.items()},
        rounds_events_per_s={name: [round(x["events"] / x["seconds"]) for x in rs]
                             for name, rs in runs.items()},
        events=n, batch=BATCH, rounds=rounds, quick=args.quick)


if __name__ == "__main__":
    main()
