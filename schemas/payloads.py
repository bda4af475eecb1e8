"""Payload models, one per event type. Version 1 of each.

Every model ignores unknown fields, so a v1 consumer keeps working when a producer adds an
optional field (the additive change that stays within a schema version).
"""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer,
                      WithJsonSchema, model_validator)

from schemas.envelope import DocumentIdentifier, Identifier

MAX_TEXT_CHARS = 2_000_000
NO_NUL = r"^[^\x00]*$"
# No NUL: the graph store cannot take it in a query parameter, so a document with one was
# indexed but dead-lettered by the graph worker, and the stores disagreed (chaos suite).
# Rejected at the contract, every consumer dead-letters it alike; the gateway's body takes the
# same types, so it answers 422 instead of failing to build the event.
DocumentTitle = Annotated[str, Field(max_length=10_000, pattern=NO_NUL)]
DocumentText = Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=NO_NUL)]
# keys bounded and NUL-free like the values (the graph store takes neither a NUL nor an endless key)
# and finite numbers: PostgreSQL's jsonb refuses NaN and Infinity, so the pgvector store failed on
# a document the embedded index took
DocumentMetadata = dict[Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)],
                        Annotated[str, Field(pattern=NO_NUL)] | int
                        | Annotated[float, Field(allow_inf_nan=False)] | bool | None]
# Versions stay exact everywhere they go: a double in the index's Lua, an int64 in the graph
# stores, a number in JSON readers. 10**30 used to pass, turned into 1e30 in the index and locked
# the document out of it for good.
MAX_VERSION = 2**53 - 1
Version = Annotated[int, Field(ge=0, le=MAX_VERSION)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# documents.v1 ---------------------------------------------------------------------------------


class DocumentUpserted(Payload):
    """A document was created or changed. ``version`` grows with every change of the source."""

    doc_id: str = DocumentIdentifier
    version: Version
    title: DocumentTitle = ""
    text: DocumentText
    metadata: DocumentMetadata = Field(default_factory=dict)


class DocumentDeleted(Payload):
    """A tombstone: the document and everything derived from it must go."""

    doc_id: str = DocumentIdentifier
    version: Version


# chunks.embedded.v1 ---------------------------------------------------------------------------


MAX_DIMENSIONS = 8192  # no more than any model's
# How a chunk's vector travels (RAGSTREAM_VECTOR_ENCODING): "float", a JSON list of numbers, or
# "base64", the base64 of its little-endian float32 bytes (what OpenAI's encoding_format="base64"
# gives). base64 is a third of the size and is read without a Python float per value: validating
# 384 floats and turning them into an array was most of the reindex worker's cost per chunk.
VectorEncoding = Literal["float", "base64"]


def _float32_values(raw: bytes) -> bytes:
    if not raw or len(raw) % 4:
        raise ValueError(f"{len(raw)} bytes is not a whole number of float32 values")
    # A float32 is NaN or infinite only if its top byte (every 4th, little-endian) is 0x7f or
    # 0xff; no vector of a real model has one (|x| >= 2**127), so two byte searches clear it.
    # Else, exactly: a sum in float64 is finite when every float32 in it is (it cannot overflow).
    # The sum took 1.3 µs of a chunk event's 7-8 µs decode; the two searches take 0.5.
    top = raw[3::4]
    if (b"\x7f" in top or b"\xff" in top) and not math.isfinite(
            np.add.reduce(np.frombuffer(raw, dtype="<f4"), dtype=np.float64)):
        raise ValueError("holds NaN or Infinity")
    return raw


# Raw bytes in Python, base64 on the wire. pydantic-core decodes it (the model's
# val_json_bytes): CPython's a2b_base64 took 5 us a vector, as long as the rest of the event.
# It reads the standard and the URL-safe alphabet, padded or not, and writes the standard one.
Float32Base64 = Annotated[
    bytes, Field(max_length=MAX_DIMENSIONS * 4), AfterValidator(_float32_values),
    PlainSerializer(lambda raw: base64.b64encode(raw).decode("ascii"), return_type=str,
                    when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64",
                    "maxLength": (MAX_DIMENSIONS * 4 + 2) // 3 * 4,
                    "description": "little-endian float32 values"})]


class ChunkEmbedded(Payload):
    model_config = ConfigDict(val_json_bytes="base64")  # merged with Payload's

    chunk_id: str = Identifier
    doc_id: str = DocumentIdentifier
    doc_version: Version
    position: int = Field(ge=0)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    text_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_id: str = Field(min_length=1, max_length=256)
    # the vector in one of its two encodings; finite numbers only (a NaN poisons every cosine it
    # meets). Read it with ``embedding()``, which takes either.
    vector: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, max_length=MAX_DIMENSIONS)
    vector_base64: Float32Base64 | None = None
    vector_ref: str | None = None
    # the document's metadata, on each of its chunks, so that search can filter on it
    metadata: DocumentMetadata = Field(default_factory=dict)
    # when the source document event happened: the index measures event-to-searchable from it
    source_time: datetime | None = None

    @model_validator(mode="after")
    def _one_vector(self) -> ChunkEmbedded:
        if self.vector is not None and self.vector_base64 is not None:
            raise ValueError("vector and vector_base64 are two encodings of one vector: send one")
        return self

    def embedding(self) -> np.ndarray | None:
        """The inline vector as float32, whichever encoding it came in (None: it has none)."""
        if self.vector_base64 is not None:
            return np.frombuffer(self.vector_base64, dtype="<f4")
        return None if self.vector is None else np.asarray(self.vector, dtype=np.float32)


def vector_fields(vector: np.ndarray, encoding: VectorEncoding) -> dict[str, Any]:
    """A ChunkEmbedded's vector field, in ``encoding``."""
    if encoding == "base64":
        return {"vector_base64": np.asarray(vector, dtype="<f4").tobytes()}
    return {"vector": np.asarray(vector, dtype=np.float32).tolist()}


class ChunksDeleted(Payload):
    doc_id: str = DocumentIdentifier
    doc_version: Version
    chunk_ids: list[str] = Field(default_factory=list)
    all_chunks: bool = False
    source_time: datetime | None = None


# kg.changes.v1 --------------------------------------------------------------------------------


class KgChanged(Payload):
    doc_id: str = DocumentIdentifier
    doc_version: Version
    entities: list[str] = Field(default_factory=list)
    edges: list[tuple[str, str]] = Field(default_factory=list)
    deleted: bool = False


# graph.embeddings.v1 --------------------------------------------------------------------------


class GraphEmbeddingsUpdated(Payload):
    embedding_version: str
    model_version: str
    node_ids: list[str]
    dimension: int = Field(gt=0)
    vectors: list[list[float]] | None = None
    full_refresh: bool = False


# inference.requests.v1 / inference.results.v1 -------------------------------------------------


TensorDtype = Literal[
    "BYTES", "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "FP16", "FP32", "FP64"
]


class Tensor(Payload):
    name: str = Field(min_length=1, max_length=256)
    datatype: TensorDtype
    shape: list[int] = Field(max_length=8)
    data: list[Any]

    @model_validator(mode="after")
    def _bytes_are_text(self) -> Tensor:
        # refused at the contract, before any worker: a BYTES value of 3000000000 (10 bytes of
        # JSON) became a 3 GB allocation, and the worker was OOM-killed on every replay
        if self.datatype == "BYTES" and not all(isinstance(v, str) for v in self.data):
            raise ValueError("BYTES data must be strings")
        return self


class InferenceRequested(Payload):
    """One inference request. Each input's ``shape`` is this request's own shape, without the
    batch dimension: the worker stacks requests into batches itself. ``data`` is the flat list of
    ``prod(shape)`` values in row-major order (text for ``BYTES``). Higher ``priority`` is served
    first within a batch window; a request still queued at its ``deadline`` is answered
    ``expired`` without reaching the model."""

    correlation_id: str = Identifier
    model: str = Field(min_length=1, max_length=256)
    model_version: str | None = None
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[str] = Field(default_factory=list, max_length=64)  # empty: every output
    reply_to: str = "inference.results.v1"
    deadline: datetime | None = None
    priority: int = Field(default=0, ge=0, le=9)


class InferenceCompleted(Payload):
    """The one result of a request: ``ok`` with outputs (each without the batch dimension), or
    ``expired`` (deadline passed, never sent), ``invalid`` (bad input or unknown model; the request
    also went to the dead-letter topic) or ``failed`` (the model failed on this request alone)."""

    correlation_id: str = Identifier
    model: str
    model_version: str | None = None
    status: Literal["ok", "expired", "invalid", "failed"]
    outputs: list[Tensor] = Field(default_factory=list)
    error: str | None = None
    served_by: str | None = None  # the model that answered: ``model`` or its fallback


# echo.v1 (diagnostics) ------------------------------------------------------------------------


class EchoReceipt(Payload):
    """The echo worker's receipt for one consumed event: proof the pipeline is alive."""

    source_event_id: str
    source_type: str
    topic: str
    partition: int
    offset: int
    subject: str
