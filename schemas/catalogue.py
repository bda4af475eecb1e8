"""The topic catalogue: the one table of topics, their versions and the payloads they carry.

Schema evolution rule (see docs/schemas.md):
- additive, optional fields stay within a version; consumers ignore fields they do not know;
- a breaking change gets a new version AND a new topic (``documents.v2``) that runs side by side;
- an event whose ``schemaversion`` is older than its topic's is upcast step by step through the
  topic's registered upcasters; with no upcaster for a step it is rejected;
- an event whose ``schemaversion`` is newer than its topic's is rejected: an old consumer must never
  guess at a payload it does not understand.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, create_model

from schemas import cloudevents
from schemas import payloads as p
from schemas.cloudevents import Headers
from schemas.envelope import Envelope

DLQ_SUFFIX = ".dlq"

Upcaster = Callable[[dict], dict]


class DecodeError(ValueError):
    """An event that can never be processed as it is. ``reason`` is a stable, short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TopicSpec:
    name: str
    version: int
    description: str
    events: Mapping[str, type[p.Payload]]
    key: str = "subject"
    # the payload field the subject (the partition key) must equal: partitions follow the
    # subject and workers follow the payload, so a mismatch let two versions of one document
    # race on two partitions and left stale chunks searchable
    key_field: str | None = None
    # the API-key scope that may publish this topic's events from outside (the gateway); None:
    # only ragstream's own workers write it. A publish key could send chunk.embedded events,
    # and one with a 3-dimension vector broke search in every reader.
    publish_scope: str | None = None
    # upcasters[n] turns a payload of schema version n into version n + 1
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)
    dead_letter: bool = True

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX

    @functools.cached_property
    def typed(self) -> TypeAdapter:
        """Validates bytes straight into a typed envelope, in one pass inside pydantic-core."""
        members = tuple(typed_envelope(t, m) for t, m in self.events.items())
        union = members[0] if len(members) == 1 else Annotated[
            Union[members], Field(discriminator="type")]  # noqa: UP007
        return TypeAdapter(union)


@functools.cache
def typed_envelope(event_type: str, model: type[p.Payload]) -> type[Envelope]:
    """An Envelope whose ``type`` is fixed and whose ``data`` is the payload model."""
    return create_model(f"{model.__name__}Event", __base__=Envelope,
                        type=(Literal[event_type], ...), data=(model, ...))


DOCUMENT_UPSERTED = "ragstream.document.upserted"
DOCUMENT_DELETED = "ragstream.document.deleted"
CHUNK_EMBEDDED = "ragstream.chunk.embedded"
CHUNKS_DELETED = "ragstream.chunks.deleted"
KG_CHANGED = "ragstream.kg.changed"
GRAPH_EMBEDDINGS_UPDATED = "ragstream.graph.embeddings.updated"
INFERENCE_REQUESTED = "ragstream.inference.requested"
INFERENCE_COMPLETED = "ragstream.inference.completed"
ECHO_RECEIPT = "ragstream.echo.receipt"

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        TopicSpec(
            "documents.v1", 1, "Source documents were created, changed or deleted.",
            {DOCUMENT_UPSERTED: p.DocumentUpserted, DOCUMENT_DELETED: p.DocumentDeleted},
            key_field="doc_id", publish_scope="publish",
        ),
        TopicSpec(
            "chunks.embedded.v1", 1, "Chunks were embedded, or a document's chunks went away.",
            {CHUNK_EMBEDDED: p.ChunkEmbedded, CHUNKS_DELETED: p.ChunksDeleted},
            key_field="doc_id",
        ),
        TopicSpec(
            "kg.changes.v1", 1, "Entities and edges of the knowledge graph that a document touched.",
            {KG_CHANGED: p.KgChanged},
            key_field="doc_id",
        ),
        TopicSpec(
            "graph.embeddings.v1", 1, "A new version of graph (GCN) embeddings is visible.",
            {GRAPH_EMBEDDINGS_UPDATED: p.GraphEmbeddingsUpdated},
        ),
        TopicSpec(
            "inference.requests.v1", 1, "Model inference requests for Triton, with a reply topic.",
            {INFERENCE_REQUESTED: p.InferenceRequested},
            key_field="correlation_id", publish_scope="infer",
        ),
        TopicSpec(
            "inference.results.v1", 1, "One result per inference request, by correlation id.",
            {INFERENCE_COMPLETED: p.InferenceCompleted},
            key_field="correlation_id",
        ),
        TopicSpec(
            "echo.v1", 1, "Diagnostics: the echo worker's receipt for every event it consumed.",
            {ECHO_RECEIPT: p.EchoReceipt},
        ),
    )
}


def topic(name: str) -> TopicSpec:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; the catalogue has {sorted(TOPICS)}") from None


def all_topic_names() -> list[str]:
    """Every topic a deployment needs, dead-letter topics included."""
    names = []
    for spec in TOPICS.values():
        names.append(spec.name)
        if spec.dead_letter:
            names.append(spec.dlq)
    return names


def validate(spec: TopicSpec, envelope: Envelope) -> p.Payload:
    """Check an envelope against its topic and return the typed payload (upcast if needed)."""
    model = spec.events.get(envelope.type)
    if model is None:
        raise DecodeError(
            "unknown_type", f"{envelope.type!r} is not published on {spec.name}; "
            f"expected one of {sorted(spec.events)}"
        )
    data = envelope.data
    version = envelope.schemaversion
    if version > spec.version:
        raise DecodeError(
            "unsupported_version",
            f"schema version {version} is newer than {spec.name} understands "
            f"(version {spec.version}); publish it to its own versioned topic",
        )
    while version < spec.version:
        upcast = spec.upcasters.get(version)
        if upcast is None:
            raise DecodeError(
                "unsupported_version",
                f"no upcaster from schema version {version} on {spec.name}",
            )
        data = upcast(data)
        version += 1
    try:
        payload = model.model_validate(data)
    except ValidationError as exc:
        raise DecodeError("invalid_payload", _summarise(exc)) from exc
    check_key(spec, envelope.subject, payload)
    return payload


def decode(spec: TopicSpec, raw: bytes, max_bytes: int, headers: Headers = ()) -> Envelope:
    """A message off the wire to a typed envelope (``data`` is the payload model), or a
    DecodeError saying why not. Either CloudEvents content mode: a message with ``ce_`` headers
    is binary mode (schemas/cloudevents.py). Valid current-version events take one pass; the
    rest take the exact path."""
    if len(raw) > max_bytes:
        raise DecodeError("oversized", f"{len(raw)} bytes is over the {max_bytes}-byte limit")
    if headers and cloudevents.is_binary(headers):
        try:
            raw = cloudevents.structured_value(raw, headers)
        except cloudevents.BindingError as exc:
            raise DecodeError(exc.reason, exc.message) from exc
    try:
        envelope = spec.typed.validate_json(raw)
    except ValidationError:
        return _decode_exactly(spec, raw)
    if envelope.schemaversion != spec.version:
        return _decode_exactly(spec, raw)
    check_key(spec, envelope.subject, envelope.data)
    return envelope


def check_key(spec: TopicSpec, subject: str, payload: p.Payload) -> None:
    """The subject must name what the payload is about (see ``TopicSpec.key_field``)."""
    if spec.key_field is not None and getattr(payload, spec.key_field) != subject:
        raise DecodeError("subject_mismatch", f"subject {subject[:80]!r} is not the payload's "
                          f"{spec.key_field} {str(getattr(payload, spec.key_field))[:80]!r}")


def _decode_exactly(spec: TopicSpec, raw: bytes) -> Envelope:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", str(exc)) from exc
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DecodeError("invalid_json", str(exc)[:300]) from exc
    if not isinstance(obj, dict):
        raise DecodeError("invalid_envelope", f"expected a JSON object, got {type(obj).__name__}")
    try:
        envelope = Envelope.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("invalid_envelope", _summarise(exc)) from exc
    payload = validate(spec, envelope)
    typed = typed_envelope(envelope.type, type(payload))
    return typed.model_validate(
        envelope.model_dump() | {"schemaversion": spec.version, "data": payload})


def _summarise(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
