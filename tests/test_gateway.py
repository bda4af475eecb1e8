"""The HTTP gateway as a client meets it: a real server process on real Kafka and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from producers.events import document_upserted
from ragstream.gateway.auth import new_key
from ragstream.gateway.openapi import SPEC, generate
from ragstream.stack import FalkorDB, ManagedProcess, free_port
from tests.helpers import read_topic


class Server:
    def __init__(self, env: dict[str, str], tmp_path, keys: list,
                 max_body_bytes: int = 65536):
        self.keys_file = tmp_path / "api_keys.json"
        self.write_keys(keys)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = ManagedProcess(
            "gateway", [sys.executable, "-m", "ragstream", "gateway", "--port", str(self.port)],
            tmp_path / "gateway.log",
            env={**env, "RAGSTREAM_API_KEYS_FILE": str(self.keys_file),
                 "RAGSTREAM_GATEWAY_MAX_BODY_BYTES": str(max_body_bytes),
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
        ("small_infer", ["infer"], 0.01, 4),
        ("small_infer_2", ["infer"], 0.01, 4),
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
    # a valid document whose subject names another: every worker would dead-letter it
    elsewhere = json.loads(document_upserted("d8", "text", version=1).model_dump_json())
    elsewhere["subject"] = "d7"
    r = httpx.post(server.url + "/v1/events", json={"events": [good[0], bad, good[1], elsewhere]},
                   headers={**auth(keys, "publisher"), "X-Request-ID": "req-42"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [x["status"] for x in body["results"]] == ["accepted", "rejected", "accepted",
                                                      "rejected"]
    assert "data.text" in body["results"][1]["error"] or "text" in body["results"][1]["error"]
    assert body["results"][3]["error"].startswith("subject_mismatch")
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
    # the store re-checks the file's modification time once a second
    _until(lambda: httpx.get(url + "/v1/topics", headers=old).status_code == 401, 10,
           "the old key refused")
    new = {"Authorization": f"Bearer {rotated_key}"}
    assert httpx.get(url + "/v1/topics", headers=new).status_code == 200

    third_key, third = new_key("reader", ["search"], 1000.0, 1000)
    before = server.keys_file.stat().st_mtime_ns
    server.write_keys([third])
    # the same modification time as before: only SIGHUP can make the server read this file
    os.utime(server.keys_file, ns=(before, before))
    third_headers = {"X-API-Key": third_key}
    # a request checks the file at most once a second: past that, this one does, and finds
    # the time unchanged
    time.sleep(1.5)
    assert httpx.get(url + "/v1/topics", headers=third_headers).status_code == 401
    server.proc.signal(signal.SIGHUP)
    _until(lambda: httpx.get(url + "/v1/topics", headers=third_headers).status_code == 200, 10,
           "the key read on SIGHUP accepted")

    log = server.log()
    assert '"key_id": "reader"' in log  # access logs name the key
    for secret in [k for k, _ in keys.values()] + [rotated_key, third_key]:
        assert secret not in log


def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def test_infer_times_out_with_504_when_no_result_comes(server, keys):
    body = {"model": "minilm", "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1],
                                           "data": ["hello"]}]}
    r = httpx.post(server.url + "/v1/infer", json=body, headers=auth(keys, "admin"), timeout=10)
    assert r.status_code == 504


def test_infer_pays_for_the_size_of_its_request(server, keys):
    """A token per started KiB of the request's event past the first, as on /v1/events; one
    token used to buy an inference request of any size up to the event limit."""
    def request(chars: int) -> dict:
        return {"model": "minilm", "inputs": [{"name": "TEXT", "datatype": "BYTES",
                                               "shape": [1], "data": ["x" * chars]}]}

    url = server.url + "/v1/infer"
    # about 3.5 kB of event: 4 KiB started, 4 tokens, the key's whole burst; it passes and
    # waits for a result (no inference worker here: 504) ...
    r = httpx.post(url, json=request(3000), headers=auth(keys, "small_infer"), timeout=10)
    assert r.status_code == 504, r.text
    # ... and leaves nothing for the next request, however small
    r = httpx.post(url, json=request(1), headers=auth(keys, "small_infer"), timeout=10)
    assert r.status_code == 429, r.text
    # about 6.5 kB costs 7 tokens: more than the burst, so it can never pass
    r = httpx.post(url, json=request(6000), headers=auth(keys, "small_infer_2"), timeout=10)
    assert r.status_code == 413 and "costs 7 tokens" in r.text and "burst of 4" in r.text, r.text


def _put(server, keys, key: str, doc_id: str, body: bytes, **kwargs) -> httpx.Response:
    return httpx.put(server.url + "/v1/documents/" + doc_id, content=body,
                     headers={**auth(keys, key), "Content-Type": "application/json"}, **kwargs)


def test_hostile_input_is_a_4xx_that_says_why_never_a_500(server, keys):
    """Each of these was a 500 or a reset connection: JSON that Python parses but cannot encode
    again (lone surrogates, NaN, 1e400), versions and ids past the event's own limits."""
    cases = [  # body, the field the error names, what its message says
        # a 422 that echoed a lone surrogate failed to encode; so did a valid document holding one
        (b'{"text": "\\ud800", "version": "x"}', "text", "lone UTF-16 surrogate"),
        (b'{"text": "\\ud800", "version": 1}', "text", "lone UTF-16 surrogate"),
        (b'{"text": "t", "version": 1, "metadata": {"\\udfff": 1}}', "metadata",
         "a key holds a lone UTF-16 surrogate"),
        (b'{"text": "t", "version": NaN}', "body", "NaN is not a JSON number"),
        (b'{"text": "t", "version": 1, "metadata": {"m": Infinity}}', "body",
         "Infinity is not a JSON number"),
        (b'{"text": "t", "version": 1e400}', "body", "the number 1e400 is out of range"),
        (b'{"text": "t", "version": 1000000000000000000000000000000}', "version",
         "less than or equal to 9007199254740991"),
        (b'{"text": "t", "version": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body",
         "maximum recursion depth"),
        (b'{"text": "\xff", "version": 1}', "body", "can't decode byte 0xff"),
    ]
    for body, field, message in cases:
        r = _put(server, keys, "publisher", "d1", body)
        assert r.status_code == 422, (body[:80], r.text)
        [error] = r.json()["detail"]
        assert error["loc"][-1] == field and message in error["msg"], (body[:80], error)
        assert "input" not in error or error["input"] in ("x", 10**30)

    # a lone surrogate in any route's body: the events batch and the embedder's texts too
    r = httpx.post(server.url + "/v1/events", content=b'{"events": [{"data": "\\ud800"}]}',
                   headers={**auth(keys, "admin"), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 0, "data"]
    r = httpx.post(server.url + "/v1/embed", content=b'{"texts": ["ok", "\\ud800"]}',
                   headers={**auth(keys, "admin"), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "texts", 1]
    # a surrogate pair is text, and an escaped backslash before "ud800" is no surrogate
    for text in (b"\\ud83d\\ude00", b"\\\\ud800"):
        r = _put(server, keys, "publisher", "d1", b'{"text": "' + text + b'", "version": 1}')
        assert r.status_code == 202, (text, r.text)

    # the tombstone's version is the contract's: up to 2**53 - 1, a number of sane length
    for version, message in [(10**30, "less than or equal to 9007199254740991"),
                             (-1, "greater than or equal to 0"),
                             ("9" * 5000, "exceeded maximum size")]:
        r = httpx.delete(server.url + "/v1/documents/d1", params={"version": version},
                         headers=auth(keys, "publisher"))
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["query", "version"] and message in error["msg"], error
    # an id leaves room for its chunk ids (``#<position>``), as the contract does
    r = _put(server, keys, "publisher", "a" * 497, b'{"text": "t", "version": 1}')
    assert r.status_code == 422 and "at most 496 characters" in r.text, r.text
    assert _put(server, keys, "publisher", "a" * 496, b'{"text": "t", "version": 1}'
                ).status_code == 202
    # a control character in an id is the contract's 422, not a route that failed to match
    # (schemathesis sent %0A: the ``path`` converter's ``.*`` stops at a newline, a 404)
    for raw_id in ("a%0Ab", "%07%09", "x%7F"):
        r = httpx.delete(server.url + f"/v1/documents/{raw_id}", params={"version": 1},
                         headers=auth(keys, "publisher"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "doc_id"], r.text
    # a long input is not echoed back whole
    r = _put(server, keys, "publisher", "d1", json.dumps({"text": "t", "version": 1,
                                                          "title": "x" * 10_001}).encode())
    assert r.status_code == 422 and "input" not in r.json()["detail"][0], r.text[:300]
    # a request id is echoed in a header and logged: only printable ASCII is kept
    r = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "a\tb"})
    assert r.status_code == 200 and len(r.headers["X-Request-ID"]) == 32
    assert "Traceback" not in server.log()


async def test_document_ids_may_hold_slashes(server, keys, settings):
    """``ragstream backfill`` makes ids from folder paths; they used to be 404 here."""
    url = server.url + "/v1/documents/"
    r = httpx.put(url + "notes/2024/a.md", json={"text": "t", "version": 1},
                  headers=auth(keys, "publisher"))
    assert r.status_code == 202, r.text
    r = httpx.delete(url + "notes%2F2024%2Fa.md", params={"version": 2},
                     headers=auth(keys, "publisher"))
    assert r.status_code == 202, r.text
    published = [json.loads(x.value) for x in await read_topic(settings, "documents.v1", 1)]
    assert [(p["type"], p["data"]["doc_id"]) for p in published] == [
        ("ragstream.document.upserted", "notes/2024/a.md"),
        ("ragstream.document.deleted", "notes/2024/a.md")]
    # metrics and spans name the route's template, not the converter or the id
    metrics = httpx.get(server.url + "/metrics").text
    assert 'route="/v1/documents/{doc_id}",status="202"} 2.0' in metrics, metrics


async def test_an_event_over_the_event_limit_is_413_before_anything_is_sent(
        env, topics, tmp_path, settings):
    """A 1.5 MiB document, or an inference request of 1.2 MB, is under the default 4 MiB body
    limit, but its event is over the 1 MiB event limit: the Publisher refused it with a 500."""
    key, entry = new_key("bulk", ["publish", "infer"], 1000.0, 100_000)
    server = Server(env, tmp_path, [entry], max_body_bytes=4 * 1024 * 1024)
    server.start()
    too_large = (r"the event is too large: 1[25]\d{5} bytes is over the 1048576-byte limit "
                 r"\(RAGSTREAM_MAX_EVENT_BYTES\); send less at once")
    try:
        r = httpx.put(server.url + "/v1/documents/big", json={"text": "x" * 1_500_000,
                                                             "version": 1},
                      headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 413 and re.fullmatch(too_large, r.json()["detail"]), r.text
        tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x" * 1_200_000]}
        r = httpx.post(server.url + "/v1/infer", json={"model": "minilm", "inputs": [tensor]},
                       headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 413 and re.fullmatch(too_large, r.json()["detail"]), r.text
    finally:
        server.proc.stop()
    assert not await read_topic(settings, "documents.v1", timeout=0.5)
    assert not await read_topic(settings, "inference.requests.v1", timeout=0.5)


def test_redis_down_is_503_with_retry_after_and_the_gateway_recovers(env, topics, tmp_path):
    """The rate limiter's Redis down was a 500: redis' ConnectionError is not the builtin one."""
    redis_server = FalkorDB(tmp_path / "own-redis")
    redis_server.start()
    key, entry = new_key("admin", ["admin"], 1000.0, 1000)
    server = Server({**env, "RAGSTREAM_REDIS_URL": redis_server.url}, tmp_path, [entry])
    server.start()
    headers = {"X-API-Key": key}

    def put() -> httpx.Response:
        return httpx.put(server.url + "/v1/documents/d1", json={"text": "t", "version": 1},
                         headers=headers, timeout=30)

    try:
        assert put().status_code == 202
        redis_server.stop()
        for r in (put(), httpx.get(server.url + "/v1/topics", headers=headers, timeout=30)):
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": "Redis is unavailable; retry later"}
            assert int(r.headers["Retry-After"]) >= 1
        assert httpx.get(server.url + "/readyz").status_code == 503
        redis_server.start()
        deadline = time.monotonic() + 30
        while (status := put().status_code) != 202 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 202
        assert "Traceback" not in server.log()
    finally:
        server.proc.stop()
        redis_server.stop()


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
