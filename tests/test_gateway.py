"""The HTTP gateway as a client meets it: a real server process on real Kafka and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from producers.events import document_upserted
from ragstream.gateway.auth import new_key
from ragstream.gateway.openapi import SPEC, generate
from ragstream.stack import ManagedProcess, free_port
from tests.helpers import read_topic


class Server:
    def __init__(self, env: dict[str, str], tmp_path, keys: list):
        self.keys_file = tmp_path / "api_keys.json"
        self.write_keys(keys)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = ManagedProcess(
            "gateway", [sys.executable, "-m", "ragstream", "gateway", "--port", str(self.port)],
            tmp_path / "gateway.log",
            env={**env, "RAGSTREAM_API_KEYS_FILE": str(self.keys_file),
                 "RAGSTREAM_GATEWAY_MAX_BODY_BYTES": "65536",
                 "RAGSTREAM_GATEWAY_INFER_TIMEOUT_S": "1"})

    def write_keys(self, keys: list) -> None:
        tmp = self.keys_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([k.model_dump() for k in keys]))
        os.replace(tmp, self.keys_file)  # atomic: the server never reads half a file

    def start(self) -> None:
        self.proc.start()
        self.proc.wait_ready(lambda: httpx.get(self.url + "/healthz").status_code == 200, 60)

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")


@pytest.fixture
def keys():
    return {name: new_key(name, scopes, rate, burst) for name, scopes, rate, burst in [
        ("publisher", ["publish"], 1000.0, 1000),
        ("reader", ["search"], 1000.0, 1000),
        ("admin", ["admin"], 1000.0, 1000),
        ("slow", ["publish"], 0.2, 2),
        ("inferrer", ["publish", "infer"], 1000.0, 1000),
    ]}


@pytest.fixture
def server(env, topics, tmp_path, keys):
    s = Server(env, tmp_path, [entry for _, entry in keys.values()])
    s.start()
    yield s
    s.proc.stop()


def auth(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name][0]}"}


async def test_events_are_validated_per_item_and_only_valid_ones_published(server, keys, settings):
    good = [json.loads(document_upserted(f"d{i}", "text", version=1).model_dump_json())
            for i in range(2)]
    bad = {"type": "ragstream.document.upserted", "source": "x", "subject": "d9",
           "data": {"doc_id": "d9"}}
    r = httpx.post(server.url + "/v1/events", json={"events": [good[0], bad, good[1]]},
                   headers={**auth(keys, "publisher"), "X-Request-ID": "req-42"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [x["status"] for x in body["results"]] == ["accepted", "rejected", "accepted"]
    assert "data.text" in body["results"][1]["error"] or "text" in body["results"][1]["error"]
    assert r.headers["X-Request-ID"] == "req-42"
    records = await read_topic(settings, "documents.v1", timeout=1)
    published = [json.loads(x.value) for x in records]
    assert sorted(p["subject"] for p in published) == ["d0", "d1"]
    # the request id became the trace id of what it published
    trace_ids = {p["traceparent"].split("-")[1] for p in published}
    assert len(trace_ids) == 1


def test_auth_scope_size_body_and_rate_paths(server, keys):
    url = server.url
    assert httpx.get(url + "/v1/topics").status_code == 401
    assert httpx.get(url + "/v1/topics", headers={"X-API-Key": "rsk_wrong"}).status_code == 401
    assert httpx.get(url + "/v1/topics", headers=auth(keys, "publisher")).status_code == 403
    assert httpx.get(url + "/v1/topics", headers=auth(keys, "reader")).status_code == 200
    assert httpx.get(url + "/v1/topics", headers=auth(keys, "admin")).status_code == 200

    doc = {"text": "x" * 70_000, "version": 1}
    r = httpx.put(url + "/v1/documents/big", json=doc, headers=auth(keys, "publisher"))
    assert r.status_code == 413

    r = httpx.put(url + "/v1/documents/d1", json={"text": "t"}, headers=auth(keys, "publisher"))
    assert r.status_code == 422
    assert any(e["loc"][-1] == "version" for e in r.json()["detail"])
    for field in ("title", "text"):  # the documents.v1 contract refuses NUL: a 422, not a 500
        doc = {"text": "t", "version": 1, field: "a\u0000b"}
        r = httpx.put(url + "/v1/documents/d1", json=doc, headers=auth(keys, "publisher"))
        assert r.status_code == 422, r.text
        assert [e["loc"][-1] for e in r.json()["detail"]] == [field]
    r = httpx.post(url + "/v1/events", content=b"{nope", headers={
        **auth(keys, "publisher"), "Content-Type": "application/json"})
    assert r.status_code == 422

    codes = [httpx.delete(url + "/v1/documents/d1?version=2", headers=auth(keys, "slow"))
             for _ in range(3)]
    assert [c.status_code for c in codes] == [202, 202, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1


async def test_a_key_publishes_only_where_its_scopes_reach_and_pays_for_the_work(
        server, keys, settings):
    from testing.inference_requests import embed_request

    url = server.url
    chunk = {"type": "ragstream.chunk.embedded", "source": "x", "subject": "d1", "data": {
        "chunk_id": "d1#0", "doc_id": "d1", "doc_version": 1, "position": 0, "text": "t",
        "text_hash": "0" * 64, "model_id": "m", "vector": [0.1, 0.2, 0.3]}}
    doc = json.loads(document_upserted("d2", "text", version=1).model_dump_json())
    request = json.loads(embed_request("hello").model_dump_json())
    # an internal topic: no key may write it from outside, and the batch's valid document is
    # not sent either
    r = httpx.post(url + "/v1/events", json={"events": [doc, chunk]},
                   headers=auth(keys, "admin"))
    assert r.status_code == 403 and "chunks.embedded.v1" in r.text
    # an inference request needs the infer scope, not publish
    r = httpx.post(url + "/v1/events", json={"events": [request]},
                   headers=auth(keys, "publisher"))
    assert r.status_code == 403 and "'infer'" in r.text
    r = httpx.post(url + "/v1/events", json={"events": [request]},
                   headers=auth(keys, "inferrer"))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    # the work is charged: three events, or a 3 KiB document, cost more than a burst of 2
    docs = [json.loads(document_upserted(f"s{i}", "t", version=1).model_dump_json())
            for i in range(3)]
    r = httpx.post(url + "/v1/events", json={"events": docs}, headers=auth(keys, "slow"))
    assert r.status_code == 413 and "burst of 2" in r.text
    r = httpx.put(url + "/v1/documents/big", json={"text": "x" * 3000, "version": 1},
                  headers=auth(keys, "slow"))
    assert r.status_code == 413
    assert not await read_topic(settings, "chunks.embedded.v1", timeout=0.5)
    published = {json.loads(x.value)["subject"]
                 for x in await read_topic(settings, "documents.v1", timeout=0.5)}
    assert published.isdisjoint({"d2", "s0", "s1", "s2", "big"})


def test_keys_rotate_without_a_restart_and_never_reach_the_logs(server, keys):
    url, old = server.url, auth(keys, "reader")
    assert httpx.get(url + "/v1/topics", headers=old).status_code == 200
    rotated_key, rotated = new_key("reader", ["search"], 1000.0, 1000)
    server.write_keys([rotated, keys["publisher"][1]])
    time.sleep(1.2)  # the store re-checks the file's modification time once a second
    assert httpx.get(url + "/v1/topics", headers=old).status_code == 401
    new = {"Authorization": f"Bearer {rotated_key}"}
    assert httpx.get(url + "/v1/topics", headers=new).status_code == 200

    third_key, third = new_key("reader", ["search"], 1000.0, 1000)
    server.write_keys([third])
    server.proc.signal(signal.SIGHUP)  # SIGHUP reloads at once
    time.sleep(0.3)
    assert httpx.get(url + "/v1/topics",
                     headers={"X-API-Key": third_key}).status_code == 200

    log = server.log()
    assert '"key_id": "reader"' in log  # access logs name the key
    for secret in [k for k, _ in keys.values()] + [rotated_key, third_key]:
        assert secret not in log


def test_infer_times_out_with_504_when_no_result_comes(server, keys):
    body = {"model": "minilm", "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1],
                                           "data": ["hello"]}]}
    r = httpx.post(server.url + "/v1/infer", json=body, headers=auth(keys, "admin"), timeout=10)
    assert r.status_code == 504


def test_committed_openapi_matches_the_code():
    assert SPEC.read_text() == generate(), "run `python -m ragstream.gateway.openapi`"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_spec_violation(server, keys):
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance",
         "--header", f"Authorization: Bearer {keys['admin'][0]}",
         "--exclude-path", "/v1/infer",  # its 504 (no inference worker here) is tested above
         "--max-examples", "25", "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
