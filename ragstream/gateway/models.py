"""The gateway's request and response bodies (their names are the OpenAPI schema names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field

from schemas.envelope import DERIVED_SUFFIX_CHARS, MAX_ID_CHARS
from schemas.payloads import (MAX_VERSION, DocumentMetadata, DocumentText, DocumentTitle, Tensor,
                              Version)

MAX_EVENTS_PER_REQUEST = 1000
# The event's own limits (schemas.envelope.DocumentIdentifier), so what passes here builds a
# valid event: 512 characters here against the contract's 496 (room for chunk ids) was a 500.
DocId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS - DERIVED_SUFFIX_CHARS,
                            pattern=r"^[^\x00-\x1f\x7f]+$")]
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
    score: float
    text: str


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHit]


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
