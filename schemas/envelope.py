"""The event envelope every ragstream topic carries.

Attribute names follow CloudEvents 1.0 (``id``, ``source``, ``type``, ``subject``, ``time``,
``datacontenttype``) plus two extensions: ``schemaversion`` (the payload's schema version) and
``traceparent`` (W3C trace context, the CloudEvents distributed-tracing extension).
The ``subject`` is the partition key, so every event about one document stays in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import cloudevents

# Namespace for deterministic event ids: a replayed source event yields the same derived ids,
# so downstream consumers can drop duplicates by id.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4d0b-9a57-1f0c6e2b8a11")

# Identifiers that become Kafka keys and graph ids: printable, bounded, no control characters.
MAX_ID_CHARS = 512
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Identifier = Field(min_length=1, max_length=MAX_ID_CHARS, pattern=_PRINTABLE)
# A document id leaves room for the ids derived from it (``<doc id>#<position>`` for a chunk),
# so every derived id is valid too: a 511-character doc id used to pass, then its chunk ids
# failed their own contract after the batch had been embedded several times over.
DERIVED_SUFFIX_CHARS = 16
DocumentIdentifier = Field(min_length=1, max_length=MAX_ID_CHARS - DERIVED_SUFFIX_CHARS,
                           pattern=_PRINTABLE)


def derived_event_id(*parts: object) -> str:
    """A stable id for an event derived from other events (same inputs, same id)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


class Envelope(BaseModel):
    """A CloudEvents-shaped envelope. Unknown extra attributes are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    subject: str = Identifier
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    schemaversion: int = Field(default=1, ge=1)
    traceparent: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )
    data: dict[str, Any]

    @property
    def trace_id(self) -> str | None:
        return self.traceparent.split("-")[1] if self.traceparent else None

    def binding_headers(self) -> list[tuple[str, bytes]]:
        """The CloudEvents Kafka binding's headers for this envelope in structured mode (the
        value is the envelope itself): readers detect the mode and trace without parsing it."""
        return cloudevents.headers(self)
