"""The gateway's request and response bodies (their names are the OpenAPI schema names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field, model_validator

from ragstream.config import StoreName
from schemas.envelope import DERIVED_SUFFIX_CHARS, MAX_ID_CHARS
from schemas.payloads import (MAX_VERSION, DocumentMetadata, DocumentText, DocumentTitle, Tensor,
                              Version)

MAX_EVENTS_PER_REQUEST = 1000
# The event's own limits (schemas.envelope.DocumentIdentifier), so what passes here builds a
# valid event: 512 characters here against the contract's 496 (room for chunk ids) was a 500.
DocId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS - DERIVED_SUFFIX_CHARS,
                            pattern=r"^[^\x00-\x1f\x7f]+$")]
# the most queries a batch may ever hold; RAGSTREAM_SERVING_MAX_BATCH_QUERIES is the deployment's
MAX_BATCH_QUERIES = 1024
QueryText = Annotated[str, Field(min_length=1, max_length=2000)]
TopK = Annotated[int, Field(ge=1, le=100)]
Weight = Annotated[float, Field(ge=0, le=100)]
EmbeddingText = Annotated[str, Field(min_length=1)]
VersionQuery = Annotated[int, Query(ge=0, le=MAX_VERSION)]


class EventsIn(BaseModel):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class ItemResult(BaseModel):
    index: int
    id: str | None
    status: Literal["accepted", "rejected"]
    topic: str | None = None
    error: str | None = None


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    results: list[ItemResult]


class DocumentIn(BaseModel):
    text: DocumentText
    title: DocumentTitle = ""
    version: Version
    metadata: DocumentMetadata = Field(default_factory=dict)


class Accepted(BaseModel):
    id: str
    topic: str


class SearchHit(BaseModel):
    doc_id: str
    chunk_id: str
    score: float  # the fused (RRF) score
    text: str
    position: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    rerank_score: float | None = None  # the cross-encoder's, where it re-ranked the hits


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHit]
    store: str = ""
    cached: bool = False  # answered from the result cache (never staler than the store)
    # "off" (not asked), "reranked", or why the fused order came back instead: "timeout",
    # "failed", "overloaded", "unavailable"
    rerank: str = "off"


class SearchFilter(BaseModel):
    """Only these documents (if given), and only chunks whose metadata holds every pair."""

    doc_ids: list[Annotated[str, Field(min_length=1,
                                       max_length=MAX_ID_CHARS - DERIVED_SUFFIX_CHARS)]] | None = (
        Field(default=None, min_length=1, max_length=1000))
    metadata: DocumentMetadata = Field(default_factory=dict, max_length=32)


class SearchQueryIn(BaseModel):
    q: QueryText
    k: TopK = 10
    dense: Weight = 1.0  # weight of the dense ranking in the fusion; 0 turns it off
    sparse: Weight = 1.0  # weight of the keyword ranking
    per_document: bool = False  # each document's best chunk only
    filter: SearchFilter | None = None
    rerank: bool | None = None  # None: as the deployment is configured

    @model_validator(mode="after")
    def _some_ranking(self) -> SearchQueryIn:
        if self.dense + self.sparse == 0:
            raise ValueError("dense and sparse weights are both 0: no ranking is left")
        return self


class SearchBatchIn(BaseModel):
    queries: list[SearchQueryIn] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
    store: StoreName | None = None  # default: the deployment's search store


class SearchBatchOut(BaseModel):
    store: str
    results: list[SearchOut]


class EmbeddingsIn(BaseModel):
    """OpenAI's embeddings request. Token-id inputs are not taken: ragstream's model has its
    own tokenizer, so ids from another tokenizer would mean nothing."""

    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=256)]
    model: str = Field(min_length=1, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 with base64


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


class EmbedIn(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256)


class EmbedOut(BaseModel):
    model: str
    dimension: int
    vectors: list[list[float]]


class InferIn(BaseModel):
    model: str = Field(min_length=1, max_length=256)
    model_version: str | None = None
    inputs: list[Tensor] = Field(min_length=1)
    priority: int = Field(default=0, ge=0, le=9)


class TopicOut(BaseModel):
    name: str
    version: int
    events: list[str]
    dead_letter_topic: str
    description: str


class Problem(BaseModel):
    detail: str
