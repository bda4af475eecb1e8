"""Tracing across topics: one trace from the gateway, through Kafka (Tansu) and a worker, to the
worker's result, with the context carried in the messages' ``traceparent`` headers."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from producers.events import document_upserted
from ragstream.gateway.app import create_app
from ragstream.gateway.auth import new_key
from ragstream.gateway.dependencies import traceparent_for
from ragstream.publisher import Publisher
from ragstream import tracing
from ragstream.stack import ManagedProcess
from ragstream.transport.base import OutMessage
from ragstream.transport.kafka import KafkaProducer
from tests.helpers import eventually, read_topic, running
from workers.echo import EchoWorker


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter, service_name="ragstream-test", simple=True)
    yield exporter
    tracing.shutdown()


def _traceparent(headers) -> str:
    value = tracing.header(headers)
    assert value is not None, f"no traceparent header in {headers}"
    return value.decode()


async def test_one_trace_holds_gateway_publish_worker_and_result(exporter, settings, topics,
                                                                 tmp_path):
    key, entry = new_key("tracer", ["publish"], 1000.0, 1000)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([entry.model_dump()]))
    app = create_app(settings.model_copy(update={"api_keys_file": keys_file}))
    async with running(EchoWorker(), settings), app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw") as client:
            r = await client.put("/v1/documents/doc-1", json={"text": "hello", "version": 1},
                                 headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 202, r.text

        async def result_span_ended() -> bool:
            return any(s.name == "publish echo.v1" for s in exporter.get_finished_spans())

        await eventually(result_span_ended, 30, message="the echo worker's result span")
        # an event that comes without any trace context starts no worker or result spans
        untraced = document_upserted("doc-untraced", "hi", version=1)
        producer = KafkaProducer(settings)
        await producer.start()
        try:
            await producer.send_all([OutMessage("documents.v1", b"doc-untraced",
                                                untraced.model_dump_json().encode())])
        finally:
            await producer.stop()

        async def untraced_receipt() -> list:
            return [r for r in await read_topic(settings, "echo.v1", timeout=0.5)
                    if json.loads(r.value)["data"]["source_event_id"] == untraced.id]

        await eventually(untraced_receipt, 30, message="the untraced event's receipt")

    spans = exporter.get_finished_spans()
    assert len(spans) == 4, [s.name for s in spans]
    by_name = {s.name: s for s in spans}
    gateway = by_name["gateway PUT /v1/documents/{doc_id}"]
    publish = by_name["publish documents.v1"]
    process = by_name["process documents.v1"]
    result = by_name["publish echo.v1"]
    assert [gateway.kind, publish.kind, process.kind, result.kind] == [
        SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.PRODUCER]
    # one trace, and each span the child of the one before it
    trace_id = gateway.context.trace_id
    # the gateway span is the root, and the trace id is the request id's, as with tracing off
    assert gateway.parent is None
    assert f"{trace_id:032x}" == traceparent_for(r.headers["x-request-id"]).split("-")[1]
    assert {s.context.trace_id for s in (publish, process, result)} == {trace_id}
    assert publish.parent.span_id == gateway.context.span_id
    assert process.parent.span_id == publish.context.span_id
    assert result.parent.span_id == process.context.span_id
    assert process.attributes["ragstream.worker"] == "echo"

    # the context rode in the messages' headers: each header names its publish span
    docs = {r.key: r for r in await read_topic(settings, "documents.v1")}
    doc = docs[b"doc-1"]
    assert _traceparent(doc.headers) == tracing.traceparent_of(publish)
    receipts = {json.loads(r.value)["subject"]: r for r in await read_topic(settings, "echo.v1")}
    receipt = receipts["doc-1"]
    assert _traceparent(receipt.headers) == tracing.traceparent_of(result)
    assert tracing.header(receipts["doc-untraced"].headers) is None
    # and the envelopes keep the trace id for logs, tracing on or off
    assert json.loads(receipt.value)["traceparent"].split("-")[1] == f"{trace_id:032x}"


async def test_an_unsampled_request_records_nothing_downstream(settings, topics, tmp_path):
    """Sampling is decided once, at the gateway's root span; the flags carry it to the workers."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter = InMemorySpanExporter()
    tracing.configure(exporter, simple=True, sampler=ParentBased(TraceIdRatioBased(0.0)))
    try:
        key, entry = new_key("tracer", ["publish"], 1000.0, 1000)
        keys_file = tmp_path / "keys.json"
        keys_file.write_text(json.dumps([entry.model_dump()]))
        app = create_app(settings.model_copy(update={"api_keys_file": keys_file}))
        async with running(EchoWorker(), settings), app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://gw") as client:
                r = await client.put("/v1/documents/doc-s", json={"text": "hi", "version": 1},
                                     headers={"Authorization": f"Bearer {key}",
                                              "X-Request-ID": "req-unsampled"})
                assert r.status_code == 202, r.text

            async def receipt() -> list:
                return await read_topic(settings, "echo.v1", timeout=0.5)

            await eventually(receipt, 30, message="the echo receipt")
        [doc] = await read_topic(settings, "documents.v1")
        header = _traceparent(doc.headers)
        assert header.split("-")[1] == traceparent_for("req-unsampled").split("-")[1]
        assert int(header.split("-")[3], 16) & 1 == 0, header  # not sampled, and says so
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.shutdown()


async def test_tracing_off_by_default_leaves_headers_alone(settings, topics):
    assert not tracing.ENABLED
    for env in ({}, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"},
                {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}):
        assert not tracing._wanted_by_env(env), env
    assert tracing._wanted_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing._wanted_by_env({"OTEL_TRACES_EXPORTER": "otlp"})

    envelope = document_upserted("doc-2", "hi", version=1,
                                 traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    async with Publisher(settings) as pub:
        await pub.publish([envelope])
    [record] = await read_topic(settings, "documents.v1")
    assert _traceparent(record.headers) == envelope.traceparent


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


async def test_a_worker_process_exports_over_otlp_from_otel_env(env, settings, topics, tmp_path):
    """The standard OTEL_* environment alone turns a worker's spans on and ships them by
    OTLP/HTTP (a local endpoint stands in for the collector)."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                  "OTEL_SERVICE_NAME": "echo-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100",
                  "PATH": os.environ["PATH"]}
    proc = ManagedProcess("worker:echo", [sys.executable, "-m", "ragstream", "worker", "echo"],
                          tmp_path / "echo.log", env=worker_env)
    proc.start()
    try:
        envelope = document_upserted("doc-3", "hi", version=1,
                                     traceparent="00-" + "12" * 16 + "-" + "34" * 8 + "-01")
        async with Publisher(settings) as pub:
            await pub.publish([envelope])

        async def exported() -> bool:
            return any(b"process documents.v1" in body for _, body in _Collector.received)

        await eventually(exported, 60, message="an OTLP export with the worker's span")
    finally:
        proc.stop()
        server.shutdown()
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces"}
    body = b"".join(b for _, b in _Collector.received)
    assert b"echo-under-test" in body and bytes.fromhex("12" * 16) in body
