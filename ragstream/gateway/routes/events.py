"""``POST /v1/events``: a batch of client envelopes, validated one by one."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from ragstream.publisher import encode, topic_for
from ragstream.gateway.body import StrictJSONRoute
from ragstream.gateway.dependencies import (Caller, EventPublisher, GatewayState, Trace, charge,
                                            kib, require)
from ragstream.gateway.models import EventsIn, EventsOut, ItemResult
from ragstream.transport.base import OutMessage
from schemas.catalogue import TOPICS, DecodeError, check_key
from schemas.envelope import Envelope

router = APIRouter(tags=["publish"], dependencies=[require("publish")],
                   route_class=StrictJSONRoute)


def encode_item(item: dict[str, Any], max_bytes: int) -> tuple[Envelope, OutMessage]:
    """One client item to a message. Current-version items validate once, into their typed
    envelope; anything else takes the Publisher's exact path, which names what is wrong."""
    spec = None
    if isinstance(item.get("type"), str):
        with contextlib.suppress(DecodeError):
            spec = TOPICS[topic_for(item["type"])]
    if spec is not None and item.get("schemaversion", 1) == spec.version:
        try:
            envelope = spec.typed.validate_python(item)
        except ValueError:
            envelope = None
        if envelope is not None:
            # the subject must name the document: the typed path skipped the check, and the
            # gateway published what every worker then dead-lettered (adversarial chaos phase)
            check_key(spec, envelope.subject, envelope.data)
            value = envelope.model_dump_json(exclude_none=True).encode()
            if len(value) > max_bytes:
                raise DecodeError("oversized", f"{len(value)} bytes is over the {max_bytes}-byte limit")
            return envelope, OutMessage(spec.name, envelope.subject.encode(), value,
                                        envelope.binding_headers())
    envelope = Envelope.model_validate(item)
    return envelope, encode(envelope, None, max_bytes)


@router.post("/v1/events", response_model=EventsOut)
async def publish_events(body: EventsIn, gateway: GatewayState, publisher: EventPublisher,
                         trace: Trace, key: Caller) -> Response:
    """Validate a batch of envelopes; publish the valid ones; report on each item. A key
    publishes only to the topics its scopes open (documents with ``publish``, inference
    requests with ``infer``); any other event makes the whole request a 403, and nothing is
    sent. Each event costs a token per started KiB."""
    results, messages = [], []
    for i, item in enumerate(body.events):
        try:
            if not item.get("traceparent"):  # a client's own trace wins
                item["traceparent"] = trace
            envelope, message = encode_item(item, gateway.settings.max_event_bytes)
        except (ValueError, DecodeError) as exc:
            results.append(ItemResult(index=i, id=str(item.get("id"))[:256] if
                                      isinstance(item, dict) and item.get("id") else None,
                                      status="rejected", error=str(exc)[:500]))
            continue
        messages.append(message)
        results.append(ItemResult(index=i, id=envelope.id, status="accepted",
                                  topic=message.topic))
    for topic in sorted({m.topic for m in messages}):
        scope = TOPICS[topic].publish_scope
        if scope is None or not key.allows(scope):
            raise HTTPException(403, f"this key may not publish to {topic}" + (
                f" (it needs the {scope!r} scope)" if scope else
                ": only ragstream's workers write it"))
    await charge(gateway, key, sum(kib(len(m.value)) for m in messages) - 1,
                 f"{len(messages)} events")
    await publisher.send_raw(messages)
    gateway.events_accepted.inc(len(messages))
    out = EventsOut(accepted=len(messages), rejected=len(results) - len(messages),
                    results=results)
    # serialised once here: returning the model would have FastAPI validate it again
    return Response(out.model_dump_json(), media_type="application/json")
