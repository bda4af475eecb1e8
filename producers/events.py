"""Builders for the events upstream systems publish, with deterministic ids where it matters."""

from __future__ import annotations

from datetime import datetime

from schemas.catalogue import DOCUMENT_DELETED, DOCUMENT_UPSERTED
from schemas.envelope import Envelope, derived_event_id
from schemas.payloads import DocumentDeleted, DocumentUpserted


def document_upserted(doc_id: str, text: str, *, version: int, title: str = "",
                      source: str = "ragstream/cli", metadata: dict | None = None,
                      time: datetime | None = None, traceparent: str | None = None) -> Envelope:
    """The same document version always gets the same event id: a re-sent backfill is a replay."""
    payload = DocumentUpserted(doc_id=doc_id, version=version, title=title, text=text,
                               metadata=metadata or {})
    extra = {"time": time} if time else {}
    return Envelope(id=derived_event_id(DOCUMENT_UPSERTED, doc_id, version), type=DOCUMENT_UPSERTED,
                    source=source, subject=doc_id, traceparent=traceparent,
                    data=payload.model_dump(mode="json"), **extra)


def document_deleted(doc_id: str, *, version: int, source: str = "ragstream/cli") -> Envelope:
    payload = DocumentDeleted(doc_id=doc_id, version=version)
    return Envelope(id=derived_event_id(DOCUMENT_DELETED, doc_id, version), type=DOCUMENT_DELETED,
                    source=source, subject=doc_id, data=payload.model_dump(mode="json"))
