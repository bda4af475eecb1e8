"""The dashboard and the alert rules against a real scrape: Debian's Prometheus on loopback scrapes
running worker processes (echo, embedding, reindex, batch_inference), the gateway and a real
Triton (PyTriton's bundled tritonserver, its metrics port), with the scrape jobs and relabelling
of infra/prometheus/prometheus.yml, and every dashboard query must return series.

A panel whose series cannot exist here would be marked PENDING in its description and listed
below with the reason (its queries must still parse); there is none.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml

from ragstream.gateway.auth import new_key
from ragstream.publisher import Publisher
from ragstream.stack import ManagedProcess, free_port, worker_process
from ragstream.transport.base import OutMessage
from ragstream.transport.kafka import KafkaProducer
from testing.inference_requests import embed_request
from ragstream.triton.server import TritonServer
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "infra/grafana/ragstream.json"
PROMETHEUS_CONFIG = ROOT / "infra/prometheus/prometheus.yml"
ALERTS = ROOT / "infra/prometheus/alerts.yml"
WORKERS = ("echo", "embedding", "reindex", "batch_inference")

# panel title -> why its series cannot exist here
PENDING: dict[str, str] = {}


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    assert path, "Debian's prometheus is not installed (.ci/run installs it: apt-get install prometheus)"
    return path


def _test_config(targets: dict[str, int], gateway_port: int, triton_metrics_port: int,
                 rules: Path) -> dict:
    """The compose config with its DNS discovery swapped for these loopback targets. The
    relabelling stays: each static target carries the __meta_dns_name that DNS would give it."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"ragstream-workers", "ragstream-gateway", "triton"} <= set(jobs)
    discovered = {name for sd in jobs["ragstream-workers"]["dns_sd_configs"] for name in sd["names"]}
    assert set(WORKERS) <= discovered, "the compose config must scrape every worker service"
    jobs["ragstream-workers"].pop("dns_sd_configs")
    jobs["ragstream-workers"]["static_configs"] = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"__meta_dns_name": name}}
        for name, port in targets.items()]
    jobs["ragstream-gateway"].pop("dns_sd_configs")
    jobs["ragstream-gateway"]["static_configs"] = [
        {"targets": [f"127.0.0.1:{gateway_port}"], "labels": {"__meta_dns_name": "gateway"}}]
    # Triton's metrics port in compose is the service's --metrics-port
    assert jobs["triton"]["static_configs"] == [{"targets": ["triton:8002"]}]
    jobs["triton"]["static_configs"] = [{"targets": [f"127.0.0.1:{triton_metrics_port}"]}]
    config["scrape_configs"] = [jobs["ragstream-workers"], jobs["ragstream-gateway"],
                                jobs["triton"]]
    return config


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        pending = panel["title"] in PENDING
        assert pending == panel.get("description", "").startswith("PENDING"), panel["title"]
        for target in panel["targets"]:
            out.append((panel["title"], target["expr"]))
    assert set(PENDING) <= {p["title"] for p in dashboard["panels"]}
    return out


def _instant(base: str, expr: str) -> list[dict]:
    expr = expr.replace("$__rate_interval", "30s").replace("$worker", ".*")
    r = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    return r.json()["data"]["result"]


async def test_every_dashboard_query_returns_series_from_a_live_scrape(env, settings, topics,
                                                                      tmp_path, tmp_path_factory):
    # Triton, with its access token like production; started once, beside the workers' start.
    # A short directory: PyTriton's unix sockets live under it (AF_UNIX paths are short)
    triton = TritonServer(tmp_path_factory.mktemp("triton"), models="minilm",
                          access_token=uuid.uuid4().hex)
    extra = {name: {} for name in WORKERS}
    extra["batch_inference"] = {
        **triton.worker_env("grpc"), "RAGSTREAM_INFERENCE_MAX_DELAY_MS": "20",
        # a configured fallback: its series exists (at 0) once minilm is called
        "RAGSTREAM_INFERENCE_MODELS": json.dumps({"minilm": {"fallback": "minilm_backup"}})}
    ports = {name: free_port() for name in WORKERS}
    procs = [worker_process(name, {**env, **extra[name], "RAGSTREAM_METRICS_HOST": "127.0.0.1",
                                   "RAGSTREAM_METRICS_PORT": str(port)}, tmp_path)
             for name, port in ports.items()]
    key, entry = new_key("scraper", ["publish"], 1000.0, 1000)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([entry.model_dump()]))
    gateway_port = free_port()
    procs.append(ManagedProcess(
        "gateway", [sys.executable, "-m", "ragstream", "gateway", "--port", str(gateway_port)],
        tmp_path / "gateway.log", env={**env, "RAGSTREAM_API_KEYS_FILE": str(keys_file)}))
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(_test_config(ports, gateway_port, triton.metrics_port,
                                                       ALERTS)))
    prom_port = free_port()
    base = f"http://127.0.0.1:{prom_port}"
    procs.append(ManagedProcess("prometheus", [
        _prometheus_binary(), f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        tmp_path / "prometheus.log"))
    triton_started = None
    try:
        # in a thread from now on (MiniLM loads in Triton while the workers start)
        triton_started = asyncio.get_running_loop().run_in_executor(None, triton.start, 120)
        for proc in procs:
            proc.start()
        for proc, port in zip(procs, ports.values()):  # embedding loads MiniLM first
            proc.wait_ready(lambda p=port: httpx.get(
                f"http://127.0.0.1:{p}/readyz").status_code == 200, 180)
        procs[-2].wait_ready(lambda: httpx.get(
            f"http://127.0.0.1:{gateway_port}/readyz").status_code == 200, 60)
        procs[-1].wait_ready(lambda: httpx.get(base + "/-/ready").status_code == 200, 30)
        await triton_started

        # inference requests through the batch_inference worker to Triton, and one expired
        now = datetime.now(UTC)
        await _publish(settings, [embed_request(f"note {i} on cocoa", correlation_id=f"i{i}")
                                  for i in range(8)]
                       + [embed_request("too late", correlation_id="late",
                                        deadline=now - timedelta(seconds=1))])

        # traffic: documents through the gateway (all three workers), one undecodable event (DLQ)
        auth = {"Authorization": f"Bearer {key}"}
        for i in range(3):
            r = httpx.put(f"http://127.0.0.1:{gateway_port}/v1/documents/scrape-{i}", headers=auth,
                          json={"text": f"Document {i} about Reuters and cocoa.", "version": 1})
            assert r.status_code == 202, r.text
        producer = KafkaProducer(settings)
        await producer.start()
        try:
            await producer.send_all([OutMessage("documents.v1", b"bad", b"{not json")])
        finally:
            await producer.stop()

        async def scraped_everything() -> bool:
            done = _instant(base, "ragstream_index_freshness_seconds_count > 0")
            dlq = _instant(base, 'ragstream_events_dead_lettered_total{worker="embedding"}')
            inferred = _instant(base, 'ragstream_inference_results_total{status="ok"} >= 8')
            expired = _instant(base, 'ragstream_inference_results_total{status="expired"} >= 1')
            served = _instant(base, 'nv_inference_request_success{model="minilm"} > 0')
            return all((done, dlq, inferred, expired, served))

        await eventually(scraped_everything, 120, interval=1,
                         message="the pipeline's series scraped (search freshness, dead letters, "
                                 "inference results, Triton's own)")
        # a second wave once the first is scraped: the workers' histograms are born with their
        # first observations, so only a change after a scrape gives their rates a value. A
        # document (the pipeline's histograms) and inference requests (the inference ones)
        await _publish(settings, [embed_request(f"note {i} on tea", correlation_id=f"j{i}")
                                  for i in range(8)])
        r = httpx.put(f"http://127.0.0.1:{gateway_port}/v1/documents/scrape-3", headers=auth,
                      json={"text": "Document 3 about Reuters and tea.", "version": 1})
        assert r.status_code == 202, r.text

        async def second_wave_scraped() -> bool:
            inferred = _instant(base, 'ragstream_inference_results_total{status="ok"} >= 16')
            indexed = _instant(base, "sum(ragstream_index_freshness_seconds_count) >= 4")
            return bool(inferred and indexed)

        await eventually(second_wave_scraped, 60, interval=1,
                         message="16 inference results and 4 chunks searchable")
        # a rate needs two samples past the change: wait a few scrapes until every panel shows
        # a value, well inside the 30 s rate window (past it, every rate is 0 and a ratio NaN)
        gaps, deadline = _dashboard_gaps(base), time.monotonic() + 15
        while gaps and time.monotonic() < deadline:
            await asyncio.sleep(1)
            gaps = _dashboard_gaps(base)
        assert not gaps, "dashboard queries with no series or only NaN:\n" + "\n".join(gaps)
        # the check can fail: a misspelled metric has no series
        assert _instant(base, "sum by (worker) (rate(ragstream_events_procesed_total[30s]))") == []

        # the dashboard's worker variable lists the running workers
        values = httpx.get(base + "/api/v1/label/worker/values",
                           params={"match[]": "ragstream_events_consumed_total"}).json()["data"]
        assert set(WORKERS) <= set(values)
        # every target up, with the worker label the relabelling gives it (Triton: its job)
        up = {s["metric"].get("worker", s["metric"]["job"]): s["value"][1]
              for s in _instant(base, "up")}
        assert up == {**{w: "1" for w in WORKERS}, "gateway": "1", "triton": "1"}
        # the alert rules loaded and evaluate without errors
        groups = httpx.get(base + "/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 10 and all(r["health"] == "ok" for r in rules), rules
    finally:
        for proc in reversed(procs):
            proc.stop()
        if triton_started is not None:
            await asyncio.gather(triton_started, return_exceptions=True)
        triton.stop()


def _dashboard_gaps(base: str) -> list[str]:
    """The dashboard queries with no series, or only NaN (a query that does not parse fails)."""
    gaps = []
    for title, expr in _queries():
        result = _instant(base, expr)
        if title in PENDING:
            continue
        if not result:
            gaps.append(f"{title}: {expr} (no series)")
        elif not any(math.isfinite(float(s["value"][1])) for s in result):
            gaps.append(f"{title}: {expr} (only NaN)")
    return gaps


async def _publish(settings, envelopes) -> None:
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)
