"""The CloudEvents Kafka protocol binding (1.0) for ragstream's envelopes.

Both content modes come in; ``mode`` picks the one that goes out (structured by default):

- **structured**: the whole envelope is the JSON value, and the ``content-type`` header is the
  event format's media type, ``application/cloudevents+json; charset=utf-8``. No ``ce_`` header
  is set: a reader that finds one takes the message for binary mode (the CloudEvents SDK's
  ``from_kafka`` does), and ragstream's own ``ce_id``/``ce_type`` routing headers made such
  readers misread every message.
- **binary**: each attribute is a ``ce_<name>`` header (``datacontenttype`` is ``content-type``),
  and the value is the data alone, as JSON.

The W3C ``traceparent`` rides in its own header in both modes, for tracing across topics.
See docs/schemas.md for the mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from schemas.envelope import Envelope

Mode = Literal["structured", "binary"]
Headers = Iterable[tuple[str, bytes]]

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=utf-8"
DATA_CONTENT_TYPE = "application/json"
CE_PREFIX = "ce_"
TRACEPARENT = "traceparent"
# what a binary-mode event must carry, as in the spec; ragstream's contract adds the subject
_REQUIRED = ("specversion", "id", "source", "type")


class BindingError(ValueError):
    """A message that claims a content mode and does not hold to it. ``reason`` is stable."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def headers(envelope: Envelope, mode: Mode = "structured") -> list[tuple[str, bytes]]:
    """The Kafka headers of ``envelope`` in ``mode`` (see ``encode``)."""
    if mode == "structured":
        out = [("content-type", STRUCTURED_CONTENT_TYPE)]
    else:
        out = [("content-type", envelope.datacontenttype.encode())]
        for name, value in envelope.model_dump(mode="json", exclude_none=True,
                                               exclude={"data"}).items():
            if name != "datacontenttype":
                out.append((CE_PREFIX + name, str(value).encode()))
    if envelope.traceparent:
        out.append((TRACEPARENT, envelope.traceparent.encode()))
    return out


def encode(envelope: Envelope, mode: Mode = "structured") -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of ``envelope`` as a Kafka message in ``mode``."""
    if mode == "structured":
        value = envelope.model_dump_json(exclude_none=True).encode()
    else:
        value = json.dumps(envelope.data if isinstance(envelope.data, dict)
                           else envelope.data.model_dump(mode="json"),
                           separators=(",", ":"), ensure_ascii=False).encode()
    return value, headers(envelope, mode)


def is_binary(message_headers: Headers) -> bool:
    return any(name[:3].lower() == CE_PREFIX for name, _ in message_headers)


def structured_value(value: bytes, message_headers: Headers) -> bytes:
    """A binary-mode message as the structured JSON envelope it stands for, so one decoder
    (and one set of limits) serves both modes. Raises ``BindingError``."""
    attributes: dict[str, object] = {}
    content_type = None
    for name, raw in message_headers:
        key = name.lower()
        if key.startswith(CE_PREFIX) or key == "content-type":
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BindingError("invalid_envelope", f"header {name} is not UTF-8") from exc
            if key == "content-type":
                content_type = text
            else:
                attributes[key[len(CE_PREFIX):]] = text
        elif key == TRACEPARENT and "traceparent" not in attributes:
            attributes["traceparent"] = bytes(raw).decode("utf-8", "replace")
    missing = [a for a in _REQUIRED if a not in attributes]
    if missing:
        raise BindingError("invalid_envelope", "a binary-mode event needs the headers "
                           + ", ".join(CE_PREFIX + a for a in missing))
    media_type = (content_type or DATA_CONTENT_TYPE).split(";", 1)[0].strip().lower()
    if media_type != DATA_CONTENT_TYPE:
        raise BindingError("unsupported_content_type",
                           f"data of type {content_type!r}; ragstream's payloads are JSON")
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BindingError("invalid_json", str(exc)[:300]) from exc
    if "schemaversion" in attributes:
        version = attributes["schemaversion"]
        attributes["schemaversion"] = int(version) if str(version).isdigit() else version
    return json.dumps({**attributes, "datacontenttype": DATA_CONTENT_TYPE, "data": data},
                      ensure_ascii=False).encode()
