"""Gateway throughput: POST /v1/events batches of 100 against a real gateway process, compared
with the raw Publisher on the same Tansu broker, in one run.

Baseline: one Publisher (the gateway too holds one) publishing the same batches of 100 valid
envelopes, as fast as it can, with ``--concurrency`` batches in flight.
Project: an httpx load loop (``--concurrency`` requests in flight) against ``ragstream gateway``
on loopback, which authenticates, rate-limits (in Redis), validates and publishes each batch.
The Publisher with one batch in flight (the baseline before issue 18) is reported beside them.

    .venv/bin/python bench/gateway.py [--seconds 30] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from producers.events import document_upserted  # noqa: E402
from ragstream.gateway.auth import new_key  # noqa: E402
from ragstream.publisher import Publisher  # noqa: E402
from ragstream.config import Settings  # noqa: E402
from ragstream.stack import ManagedProcess, free_port  # noqa: E402
from ragstream.transport import ensure_topics  # noqa: E402
from schemas.catalogue import all_topic_names  # noqa: E402

BATCH = 100
TEXT = "Showers continued throughout the week in the Bahia cocoa zone, alleviating the drought."


def batch(n: int, start: int) -> list:
    return [document_upserted(f"doc-{start + i}", TEXT, version=1) for i in range(n)]


async def raw_publisher(settings: Settings, seconds: float, concurrency: int) -> float:
    batches = [batch(BATCH, i * BATCH) for i in range(200)]
    sent = 0
    async with Publisher(settings) as pub:
        stop_at = time.perf_counter() + seconds

        async def client(n: int) -> None:
            nonlocal sent
            i = n
            while time.perf_counter() < stop_at:
                # not ``sent += await ...``: that reads ``sent`` before the await, and the other
                # clients' counts added meanwhile are lost
                published = await pub.publish(batches[i % len(batches)])
                sent += published
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(concurrency)))
        return sent / (time.perf_counter() - started)


async def through_gateway(url: str, key: str, seconds: float,
                          concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    accepted = errors = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    stop_at = time.perf_counter() + seconds

    # bodies are made before the clock starts: the load generator shares the machine's 2 cores
    bodies = [json.dumps({"events": [json.loads(e.model_dump_json())
                                     for e in batch(BATCH, i * BATCH)]}).encode()
              for i in range(200)]

    async def client(n: int) -> None:
        nonlocal accepted, errors
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            i = n
            while time.perf_counter() < stop_at:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                r = await http.post("/v1/events", content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    accepted += r.json()["accepted"]
                else:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return accepted / (time.perf_counter() - started), latencies, errors


async def main() -> None:
    parser = harness.parser(__doc__, quick="10 s each of the three")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    seconds = 10 if args.quick else args.seconds

    with harness.workdir() as tmp, harness.tansu(tmp) as broker, harness.falkordb(tmp) as store:
        key, entry = new_key("bench", ["publish"], rate_per_s=1e6, burst=1_000_000)
        keys_file = tmp / "keys.json"
        keys_file.write_text(json.dumps([entry.model_dump()]))
        port = free_port()
        env = {"RAGSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap, "RAGSTREAM_KAFKA_IDEMPOTENCE": "false",
               "RAGSTREAM_REDIS_URL": store.url, "RAGSTREAM_API_KEYS_FILE": str(keys_file),
               "RAGSTREAM_LOG_LEVEL": "WARNING"}
        gateway = ManagedProcess("gateway", [sys.executable, "-m", "ragstream", "gateway",
                                             "--port", str(port)], tmp / "gateway.log", env=env)
        try:
            settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_idempotence=False,
                                redis_url=store.url)
            await ensure_topics(settings, all_topic_names(), 6)
            gateway.start()
            gateway.wait_ready(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code
                               == 200, 60)
            sequential = await raw_publisher(settings, seconds, 1)
            baseline = await raw_publisher(settings, seconds, args.concurrency)
            project, latencies, errors = await through_gateway(
                f"http://127.0.0.1:{port}", key, seconds, args.concurrency)
        finally:
            gateway.stop()

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    ratio = project / baseline
    harness.table([("path", "<46"), ("events/s", ">12,.0f")], [
        ("raw Publisher, batches of 100, c=1", sequential, "(the old baseline)"),
        (f"raw Publisher, batches of 100, c={args.concurrency}", baseline, "(baseline)"),
        (f"POST /v1/events, batches of 100, c={args.concurrency}", project, "(project)")])
    print(f"ratio {ratio:.2f} (target >= 0.5); request p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
          f"{len(latencies)} requests, {errors} errors, {seconds:.0f} s each")
    harness.report("gateway", "events_per_s", round(baseline), round(project), round(ratio, 3),
                   "events/s", p50_ms=round(p50, 1), p99_ms=round(p99, 1),
                   requests=len(latencies), errors=errors, batch=BATCH,
                   concurrency=args.concurrency, seconds=seconds,
                   baseline_desc="one Publisher, the same batches, the same concurrency",
                   baseline_concurrency_1=round(sequential),
                   ratio_vs_concurrency_1=round(project / sequential, 3))


if __name__ == "__main__":
    asyncio.run(main())
