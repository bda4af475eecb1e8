"""Build inference request events (for producers, the tests and the benchmark)."""

from __future__ import annotations

import uuid
from datetime import datetime

from schemas.catalogue import INFERENCE_REQUESTED
from schemas.envelope import Envelope
from schemas.payloads import InferenceRequested, Tensor


def request(model: str, inputs: dict[str, tuple[str, list[int], list]], *,
            correlation_id: str | None = None, version: str | None = None,
            deadline: datetime | None = None, priority: int = 0,
            reply_to: str = "inference.results.v1", subject: str | None = None,
            source: str = "ragstream/client") -> Envelope:
    """``inputs``: name -> (datatype, shape without the batch dimension, flat values)."""
    cid = correlation_id or uuid.uuid4().hex
    payload = InferenceRequested(
        correlation_id=cid, model=model, model_version=version, reply_to=reply_to,
        deadline=deadline, priority=priority,
        inputs=[Tensor(name=n, datatype=d, shape=s, data=v) for n, (d, s, v) in inputs.items()])
    return Envelope(type=INFERENCE_REQUESTED, source=source, subject=subject or cid,
                    data=payload.model_dump(mode="json"))


def embed_request(text: str, **kw) -> Envelope:
    """A request to the MiniLM embedder: ``text`` -> ``embedding`` (384 floats)."""
    return request("minilm", {"text": ("BYTES", [1], [text])}, **kw)


def rerank_request(query: str, passage: str, **kw) -> Envelope:
    """A request to the MiniLM reranker: ``query``, ``passage`` -> ``score``."""
    return request("minilm_reranker", {"query": ("BYTES", [1], [query]),
                                       "passage": ("BYTES", [1], [passage])}, **kw)
