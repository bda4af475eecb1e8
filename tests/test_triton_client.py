"""The Triton client and the dispatch policy's parts: metadata parsing, input validation, error
sorting (on the status codes a real Triton answers), the circuit breaker. The worker's behaviour
on a real Triton is in test_batch_inference."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from ragstream.config import Settings
from ragstream.stack import free_port
from ragstream.triton.client import (TritonClient, TritonRejected, TritonUnavailable, classify,
                                     model_info, to_numpy)
from ragstream.backoff import backoff_s
from ragstream.triton.dispatch import (CircuitBreaker, Dispatcher, Item, ModelPolicy, ModelSettings,
                                       validate)
from ragstream.triton.server import TritonServer
from testing.inference_requests import embed_request, request
from schemas.payloads import InferenceRequested
from workers.batch_inference import BatchInferenceWorker

# what PyTriton's Triton answers for the MiniLM model (gRPC, as JSON)
METADATA = {"name": "minilm", "versions": ["1"], "platform": "python",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": ["-1", "1"]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": ["-1", "384"]}]}
CONFIG = {"config": {"name": "minilm", "max_batch_size": 64,
                     "dynamic_batching": {"max_queue_delay_microseconds": "2000",
                                          "default_queue_policy": {"max_queue_size": 1024}}}}


def test_model_info_drops_the_batch_dimension_and_reads_the_limits():
    info = model_info(METADATA, CONFIG)
    assert info.inputs["text"].shape == (1,) and info.inputs["text"].datatype == "BYTES"
    assert info.outputs["embedding"].shape == (384,)
    assert (info.max_batch_size, info.max_queue_size, info.dynamic_batching) == (64, 1024, True)
    unbatched = model_info({**METADATA, "inputs": [{"name": "x", "datatype": "FP32",
                                                    "shape": ["-1", "3"]}]},
                           {"config": {"name": "minilm"}})
    assert unbatched.max_batch_size == 0 and unbatched.batch_limit == 1
    assert unbatched.inputs["x"].shape == (-1, 3)  # not batched: -1 is a real dimension


def payload(env) -> InferenceRequested:
    return InferenceRequested.model_validate(env.data)


def test_validate_accepts_a_good_request_and_names_what_is_wrong_with_bad_ones():
    info = model_info(METADATA, CONFIG)
    arrays = validate(payload(embed_request("hello")), info)
    assert arrays["text"].shape == (1,) and arrays["text"][0] == b"hello"
    cases = {
        "is FP32": request("minilm", {"text": ("FP32", [1], [1.0])}),
        "has shape [2]": request("minilm", {"text": ("BYTES", [2], ["a", "b"])}),
        "missing ['text'], unknown ['txt']": request("minilm", {"txt": ("BYTES", [1], ["a"])}),
        "2 values for shape [1]": request("minilm", {"text": ("BYTES", [1], ["a", "b"])}),
    }
    for message, env in cases.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate(payload(env), info)


def test_to_numpy_refuses_values_that_do_not_fit_the_dtype():
    assert to_numpy("INT32", [1, 2, 3, 4], (2, 2)).dtype == np.int32
    with pytest.raises(ValueError):
        to_numpy("INT8", [1000], (1,))
    with pytest.raises(ValueError):
        to_numpy("INT32", [1.5], (1,))
    with pytest.raises(ValueError):
        to_numpy("FP32", ["x"], (1,))


def test_a_bytes_input_holding_a_number_is_refused_before_anything_is_allocated():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for hostile in ([3_000_000_000], [10**12], [[1] * 3], [None], [True]):
        with pytest.raises(ValueError, match="BYTES data must be strings"):
            to_numpy("BYTES", hostile, (1,))
    # bytes(3000000000) would have taken three gigabytes; the peak did not move by one
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20  # KiB


def test_errors_are_sorted_by_status_code_never_by_their_text():
    # the status is what tritonclient puts there: str(grpc.StatusCode) or the HTTP status
    assert isinstance(classify(InferenceServerException("down", "StatusCode.UNAVAILABLE")),
                      TritonUnavailable)
    assert isinstance(classify(ConnectionRefusedError()), TritonUnavailable)
    assert isinstance(classify(InferenceServerException("busy", "503")), TritonUnavailable)
    refused = classify(InferenceServerException("unexpected shape", "StatusCode.INVALID_ARGUMENT"))
    assert isinstance(refused, TritonRejected) and refused.invalid
    crashed = classify(InferenceServerException("model raised", "500"))  # INTERNAL, over HTTP
    assert isinstance(crashed, TritonRejected) and not crashed.invalid
    assert crashed.code is grpc.StatusCode.INTERNAL
    # words in the text that once decided it do not: the code does
    assert isinstance(classify(InferenceServerException(
        "connection timeout 503 unavailable", "StatusCode.INVALID_ARGUMENT")), TritonRejected)
    assert isinstance(classify(InferenceServerException("400 404 invalid", "502")),
                      TritonUnavailable)
    # no status at all: never drop a request on a guess
    assert isinstance(classify(InferenceServerException("who knows")), TritonUnavailable)
    # a TritonUnavailable is a ConnectionError, which the runtime treats as backpressure
    assert isinstance(TritonUnavailable("x"), ConnectionError)


def test_backoff_doubles_from_the_base():
    assert [backoff_s(n, 0.1) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert backoff_s(9, 0.1, cap_s=2.0) == 2.0


def test_circuit_breaker_opens_after_n_failures_then_lets_one_probe_through():
    now = [0.0]
    b = CircuitBreaker(failures=3, reset_s=5, _clock=lambda: now[0])
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    assert b.retry_after() == pytest.approx(5)
    now[0] = 5.0
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again, for another reset_s
    assert b.state == "open" and not b.allow()
    now[0] = 10.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.consecutive == 0


async def test_a_deadline_without_a_time_zone_is_read_as_utc():
    """A naive deadline must not crash the batch (naive and aware datetimes do not compare)."""
    from datetime import datetime, timedelta

    from ragstream.runtime import Batch, Event
    from ragstream.transport.base import Record
    from schemas.catalogue import INFERENCE_REQUESTED, decode, topic

    env = embed_request("x", correlation_id="naive")
    data = {**env.data, "deadline": (datetime.utcnow() - timedelta(seconds=5)).isoformat()}
    raw = env.model_copy(update={"data": data}).model_dump_json().encode()
    spec = topic("inference.requests.v1")
    event = Event(Record("inference.requests.v1", 0, 0, b"k", raw, [], 0), decode(spec, raw, 1 << 20))
    assert event.payload.deadline.tzinfo is None and event.type == INFERENCE_REQUESTED
    worker = BatchInferenceWorker(client=object())  # an expired request never reaches a client
    worker._answered = []
    batch = Batch([event], "batch_inference")
    await worker._process(batch)
    ((_, result),) = batch.emitted
    assert result.data["status"] == "expired"


# what a real Triton answers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> TritonServer:
    # a queue of one, and a long batching delay, so a burst fills it; the access token is checked
    server = TritonServer(tmp_path_factory.mktemp("triton"), models="minilm", max_batch_size=8,
                          max_queue_size=1, max_queue_delay_us=200_000,
                          access_token=uuid.uuid4().hex, protect="inference,metadata,model-config")
    server.start()
    yield server
    server.stop()


def column(*values: str) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=np.object_).reshape(-1, 1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_real_triton_errors_are_sorted_by_their_status_code(triton, protocol):
    client = TritonClient(Settings.from_env(triton.worker_env(protocol)))
    try:
        with pytest.raises(TritonRejected) as unknown:
            await client.info("no_such_model")
        assert unknown.value.code is grpc.StatusCode.NOT_FOUND and unknown.value.invalid
        with pytest.raises(TritonRejected) as version:
            await client.info("minilm", "7")
        assert version.value.code is grpc.StatusCode.NOT_FOUND and version.value.invalid

        info = await client.info("minilm")
        wide = {"text": np.array([[b"a", b"b"]], dtype=np.object_)}  # shape [1, 2]; takes [1]
        with pytest.raises(TritonRejected) as malformed:
            await client.infer(info, wide)
        assert malformed.value.code is grpc.StatusCode.INVALID_ARGUMENT and malformed.value.invalid
        # refused inputs the cached metadata let through: the model may have a new signature,
        # so its metadata is asked for again
        assert await client.info("minilm") is not info

        full = await asyncio.gather(*[client.infer(info, {"text": column("a")})
                                      for _ in range(24)], return_exceptions=True)
        errors = [e for e in full if isinstance(e, BaseException)]
        assert errors, "a queue of one must overflow under a burst of 24"
        assert all(isinstance(e, TritonUnavailable) and e.code is grpc.StatusCode.UNAVAILABLE
                   for e in errors), errors
    finally:
        await client.close()

    # a refused token is the deployment's fault: transient (UNAVAILABLE over gRPC, 403 over HTTP)
    anonymous = TritonClient(Settings.from_env({**triton.worker_env(protocol),
                                                "RAGSTREAM_TRITON_AUTH_HEADER": "wrong"}))
    try:
        with pytest.raises(TritonUnavailable) as refused:
            await anonymous.infer(info, {"text": column("a")})
        assert refused.value.code in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.PERMISSION_DENIED)
    finally:
        await anonymous.close()

    # nothing listening: transient
    down = TritonClient(Settings.from_env({"RAGSTREAM_TRITON_URL": f"127.0.0.1:{free_port()}",
                                           "RAGSTREAM_TRITON_PROTOCOL": protocol,
                                           "RAGSTREAM_TRITON_TIMEOUT_S": "2"}))
    try:
        with pytest.raises(TritonUnavailable):
            await down.infer(info, {"text": column("a")})
    finally:
        await down.close()


def test_per_model_settings_follow_their_file(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"*": {"max_delay_ms": 7},
                                "minilm": {"max_batch_size": 8, "fallback": "minilm_backup"}}))
    settings = Settings.from_env({"RAGSTREAM_INFERENCE_MODELS_PATH": str(path)})
    models = ModelSettings(settings)
    assert models.policy("minilm") == ModelPolicy(8, 7.0, settings.inference_max_inflight,
                                                  "minilm_backup")
    assert models.policy("other").max_batch_size == settings.inference_max_batch_size
    assert models.fill_window_ms == 7
    assert not models.reload(), "an unchanged file is not read again"

    def rewrite(text: str, age: float) -> None:  # a new mtime, however coarse the clock
        path.write_text(text)
        os.utime(path, (time.time() + age, time.time() + age))

    rewrite(json.dumps({"minilm": {"max_batch_size": 512}}), 5)
    assert models.reload() and models.policy("minilm") == ModelPolicy(
        512, settings.inference_max_delay_ms, settings.inference_max_inflight, None)
    assert models.fill_records == 512
    rewrite("[1, 2]", 10)  # not an object: the settings in force stay
    assert not models.reload() and models.policy("minilm").max_batch_size == 512


async def test_dispatcher_stays_within_the_models_queue_limit(triton):
    """A queue of one at Triton: the dispatcher never has more than one call in flight, so a
    burst of calls all succeed, with no retry (a full queue would be retried, or raised here)."""
    settings = Settings.from_env({**triton.worker_env("grpc"), "RAGSTREAM_INFERENCE_RETRIES": "0",
                                  "RAGSTREAM_INFERENCE_MAX_INFLIGHT": "8"})
    client = TritonClient(settings)
    registry = CollectorRegistry()
    try:
        dispatcher = Dispatcher(client, settings, registry)
        info = await client.info("minilm")
        assert info.max_queue_size == 1
        items = [Item(payload(embed_request(f"text {i}")), {"text": column(f"text {i}")[0]},
                      sent_at=time.time()) for i in range(24)]
        await asyncio.gather(*[dispatcher.run(info, None, [item]) for item in items])
    finally:
        await client.close()
    assert all(i.error is None and i.outputs["embedding"].shape == (384,) for i in items)
    assert registry.get_sample_value("ragstream_inference_retries_total", {"model": "minilm"}) == 0
    assert registry.get_sample_value("ragstream_inference_batch_size_count",
                                     {"model": "minilm"}) == 24
