"""``PUT`` and ``DELETE /v1/documents/{doc_id}``: a document's upsert or tombstone event.

``doc_id`` may hold ``/`` (``ragstream backfill`` makes ids from folder paths), sent as is or
as ``%2F``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.convertors import Convertor, register_url_convertor

from producers.events import document_deleted, document_upserted
from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import (Caller, EventPublisher, GatewayState, Trace, charge,
                                            kib, require)
from ragstream.gateway.models import Accepted, DocId, DocumentIn, VersionQuery
from ragstream.publisher import encode

class AnyId(Convertor):
    """An id that may hold ``/`` and, for the contract to refuse with a 422, anything else:
    Starlette's ``path`` (``.*``) does not match a newline, and such an id was a 404."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anyid", AnyId())

router = APIRouter(tags=["publish"], dependencies=[require("publish")],
                   route_class=StrictJSONRoute)


@router.put("/v1/documents/{doc_id:anyid}", response_model=Accepted, status_code=202)
async def put_document(doc_id: DocId, body: DocumentIn, gateway: GatewayState,
                       publisher: EventPublisher, trace: Trace, key: Caller) -> Accepted:
    envelope = document_upserted(doc_id, body.text, version=body.version, title=body.title,
                                 source="ragstream/gateway", metadata=body.metadata,
                                 traceparent=trace)
    # over the event limit is 413 (middleware.event_refused), before the key pays for it
    message = encode(envelope, None, gateway.settings.max_event_bytes,
                     gateway.settings.cloudevents_mode)
    # a token per started KiB of text: what a document costs downstream grows with its chunks
    await charge(gateway, key, kib(len(body.text.encode()) + len(body.title.encode())) - 1,
                 "the document's size")
    await publisher.send_raw([message])
    gateway.events_accepted.inc()
    return Accepted(id=envelope.id, topic=message.topic)


@router.delete("/v1/documents/{doc_id:anyid}", response_model=Accepted, status_code=202)
async def delete_document(doc_id: DocId, version: VersionQuery,
                          gateway: GatewayState, publisher: EventPublisher) -> Accepted:
    envelope = document_deleted(doc_id, version=version, source="ragstream/gateway")
    await publisher.publish([envelope])
    gateway.events_accepted.inc()
    return Accepted(id=envelope.id, topic="documents.v1")
