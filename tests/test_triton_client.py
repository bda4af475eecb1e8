"""The Triton client's pure parts: metadata parsing, input validation, error sorting, the circuit
breaker. No server needed; the worker's behaviour on a real Triton is in test_batch_inference."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from ragstream.triton.client import (CircuitBreaker, TritonRejected, TritonUnavailable, classify,
                                     model_info, to_numpy)
from testing.inference_requests import embed_request, request
from schemas.payloads import InferenceRequested
from workers.batch_inference import BatchInferenceWorker, validate

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


def test_errors_are_sorted_into_transient_and_permanent():
    assert isinstance(classify(InferenceServerException("down", "StatusCode.UNAVAILABLE")),
                      TritonUnavailable)
    assert isinstance(classify(InferenceServerException(
        "Exceeds maximum queue size", "StatusCode.UNAVAILABLE")), TritonUnavailable)
    assert isinstance(classify(ConnectionRefusedError()), TritonUnavailable)
    assert isinstance(classify(InferenceServerException(
        "unexpected shape", "StatusCode.INVALID_ARGUMENT")), TritonRejected)
    assert isinstance(classify(InferenceServerException("no model", "400")), TritonRejected)
    assert isinstance(classify(InferenceServerException("busy", "503")), TritonUnavailable)
    # a TritonUnavailable is a ConnectionError, which the runtime treats as backpressure
    assert isinstance(TritonUnavailable("x"), ConnectionError)


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
