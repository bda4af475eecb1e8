"""``PUT`` and ``DELETE /v1/documents/{doc_id}``: a document's upsert or tombstone event."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from producers.events import document_deleted, document_upserted
from ragstream.gateway.dependencies import (Caller, EventPublisher, GatewayState, Trace, charge,
                                            kib, require)
from ragstream.gateway.models import Accepted, DocId, DocumentIn
from schemas.payloads import MAX_VERSION

router = APIRouter(tags=["publish"], dependencies=[require("publish")])


@router.put("/v1/documents/{doc_id}", response_model=Accepted, status_code=202)
async def put_document(doc_id: DocId, body: DocumentIn, gateway: GatewayState,
                       publisher: EventPublisher, trace: Trace, key: Caller) -> Accepted:
    # a token per started KiB of text: what a document costs downstream grows with its chunks
    await charge(gateway, key, kib(len(body.text.encode()) + len(body.title.encode())) - 1,
                 "the document's size")
    envelope = document_upserted(doc_id, body.text, version=body.version, title=body.title,
                                 source="ragstream/gateway", metadata=body.metadata,
                                 traceparent=trace)
    await publisher.publish([envelope])
    gateway.events_accepted.inc()
    return Accepted(id=envelope.id, topic="documents.v1")


@router.delete("/v1/documents/{doc_id}", response_model=Accepted, status_code=202)
async def delete_document(doc_id: DocId, version: Annotated[int, Query(ge=0, le=MAX_VERSION)],
                          gateway: GatewayState, publisher: EventPublisher) -> Accepted:
    envelope = document_deleted(doc_id, version=version, source="ragstream/gateway")
    await publisher.publish([envelope])
    gateway.events_accepted.inc()
    return Accepted(id=envelope.id, topic="documents.v1")
