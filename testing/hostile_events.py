"""Valid, or nearly valid, hostile events of every class of issue 15, and what each must become.

Each ``Hostile`` carries how it is sent (a gateway ``Request``, or a message straight to a
topic), what should happen to it (``refused`` with one of ``statuses``, ``dead_lettered`` by
each worker in ``reasons`` with that reason, ``ignored`` or ``accepted``), and what would show
that it got through anyway (``doc_ids`` it could create or change, a ``marker`` word only its
text carries). testing/adversarial.py sends them and judges each after the run.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ragstream.embedders import MiniLMEmbedder
from schemas.catalogue import (
    CHUNK_EMBEDDED, DOCUMENT_DELETED, DOCUMENT_UPSERTED, INFERENCE_COMPLETED, INFERENCE_REQUESTED,
    KG_CHANGED,
)
from schemas.envelope import Envelope
from schemas.payloads import MAX_VERSION

# who reads each topic the hostile events go to, and so must dead-letter them
READERS = {"documents.v1": ("embedding", "entity_linking"), "chunks.embedded.v1": ("reindex",),
           "kg.changes.v1": ("gcn_refresh",)}
WHEN = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so the hostile bytes are the same every run
# each key a request takes: scopes, tokens per second, burst
KEYS = {"publisher": (["publish"], 1000.0, 5000), "inferrer": (["infer"], 1000.0, 1000),
        "publish_infer": (["publish", "infer"], 1000.0, 1000),
        "reader": (["search"], 1000.0, 1000), "admin": (["admin"], 1000.0, 1000),
        "small_events": (["publish"], 0.01, 10), "small_infer": (["infer"], 0.01, 4),
        "small_embed": (["infer"], 0.01, 10), "flood": (["search"], 0.01, 5)}
FLOOD_REQUESTS = 15


@dataclass
class Request:
    method: str
    path: str
    key: str
    body: Any = None  # JSON


@dataclass
class Hostile:
    name: str
    kind: str  # resource, cross_scope, cross_topic, version, id_length, subject, reused, edge
    expect: str  # refused, dead_lettered, ignored or accepted
    request: Request | None = None  # through the gateway ...
    message: tuple[str, bytes, bytes] | None = None  # ... or (topic, key, value) straight
    statuses: tuple[int, ...] = ()  # the gateway answers that count as refused (200: an item)
    reasons: dict[str, str] = field(default_factory=dict)  # worker -> expected dead-letter reason
    doc_ids: tuple[str, ...] = ()  # the documents it could create or change
    marker: str | None = None  # a word only its text carries
    event_id: str | None = None
    # what happened
    status: int | None = None
    answer: str = ""
    dead: dict[str, str] = field(default_factory=dict)
    reached: list[str] = field(default_factory=list)
    outcome: str = ""


class Builder:
    """Seeded ids and markers, and envelopes as the wire carries them (dicts: several of them
    are not valid events, so no model can build them)."""

    def __init__(self, seed: int):
        self.rng = random.Random(f"{seed}:adversarial")
        self.n = 0

    def marker(self) -> str:
        self.n += 1
        return f"zqadv{self.n}mark"  # no marker is a part of another

    def envelope(self, event_type: str, subject: str, data: dict) -> dict:
        return {"specversion": "1.0", "id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                "type": event_type, "source": "adversary", "subject": subject,
                "time": WHEN.isoformat(), "datacontenttype": "application/json",
                "schemaversion": 1, "data": data}

    def document(self, doc_id: str, version: Any, text: str, subject: str | None = None,
                 metadata: dict | None = None) -> dict:
        return self.envelope(DOCUMENT_UPSERTED, subject or doc_id, {
            "doc_id": doc_id, "version": version, "title": "", "text": text,
            "metadata": metadata or {}})

    def chunk(self, doc_id: str, vector: list[float] | None, *, model: str | None = None,
              version: int = 1, subject: str | None = None) -> dict:
        data = {"chunk_id": f"{doc_id}#0", "doc_id": doc_id, "doc_version": version,
                "position": 0, "text": "planted", "text_hash": "0" * 64,
                "model_id": model or MiniLMEmbedder.model_id, "metadata": {}}
        if vector is not None:
            data["vector"] = vector
        return self.envelope(CHUNK_EMBEDDED, subject or doc_id, data)

    def inference(self, data: list) -> dict:
        cid = uuid.UUID(int=self.rng.getrandbits(128)).hex
        return self.envelope(INFERENCE_REQUESTED, cid, {
            "correlation_id": cid, "model": "minilm",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": data}]})


def straight(b: Builder, name: str, kind: str, topic: str, event: dict, reason: str | None,
             *, doc_ids: tuple[str, ...] = (), marker: str | None = None,
             expect: str = "dead_lettered", reasons: dict[str, str] | None = None) -> Hostile:
    """An event published straight to ``topic``: each reader of the topic must dead-letter it
    with ``reason`` (or as ``reasons`` says), or ignore it (``expect="ignored"``)."""
    value = json.dumps(event).encode()
    if reasons is None:
        reasons = {w: reason for w in READERS[topic]} if reason else {}
    return Hostile(name, kind, expect, message=(topic, event["subject"].encode(), value),
                   reasons=reasons, doc_ids=doc_ids, marker=marker, event_id=event["id"])


def gateway(name: str, kind: str, request: Request, statuses: tuple[int, ...], *,
            expect: str = "refused", reasons: dict[str, str] | None = None,
            doc_ids: tuple[str, ...] = (), marker: str | None = None) -> Hostile:
    return Hostile(name, kind, expect, request=request, statuses=statuses,
                   reasons=reasons or {}, doc_ids=doc_ids, marker=marker)


def events_request(key: str, *events: dict) -> Request:
    return Request("POST", "/v1/events", key, {"events": list(events)})


def put_request(key: str, doc_id: str, text: str, version: Any, **extra) -> Request:
    return Request("PUT", f"/v1/documents/{doc_id}", key,
                   {"text": text, "version": version, **extra})


def pathological_paragraph(rng: random.Random, marker: str) -> str:
    """One paragraph of 200,000 three-letter words (about 800 kB, under the event limit): about
    430,000 word pieces, over the 2,000-chunk limit. The issue's own case: chunking it took 22 s
    on the event loop and the worker was evicted; linking it took 81 s and 3.4 GB."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ("".join(rng.choice(letters) for _ in range(3)) for _ in range(200_000))
    return marker + " " + " ".join(words)


@dataclass
class Targets:
    """History documents the phase aims at, chosen apart so no effect is blamed on another."""

    crash: list[str]  # several versions each, sent back to back: batches that crash
    stale: list[str]  # final version 2 and live: an older version comes after it
    reused: list[str]  # live: their current version comes again, changed
    other: list[str]  # live: another document's delete names it in its payload


def choose_targets(events: Sequence[Envelope], final: dict[str, tuple[int, bool]],
                   skip: Sequence[str]) -> Targets:
    counts = Counter(e.subject for e in events)
    multi = [d for d, n in counts.items() if n >= 2 and d not in skip]
    rewritten_live = [d for d in multi if final[d] == (2, False)]
    stale = rewritten_live[-1:]
    crash = [d for d in multi if d not in stale]
    single_live = [d for d, n in counts.items()
                   if n == 1 and not final[d][1] and d not in skip]
    return Targets(crash, stale, single_live[:2], single_live[2:3])


def hostile_events(events: Sequence[Envelope], final: dict[str, tuple[int, bool]],
                   targets: Targets, seed: int) -> list[Hostile]:
    b = Builder(seed)
    text_of = {e.subject: e.data["text"] for e in events if e.type == DOCUMENT_UPSERTED}
    version_of = {d: v for d, (v, _) in final.items()}
    out: list[Hostile] = []

    def doc(name: str) -> str:
        return f"adv-{name}"

    # resource exhaustion
    m = b.marker()
    out.append(gateway("memory bomb on /v1/infer", "resource", Request(
        "POST", "/v1/infer", "inferrer", {"model": "minilm", "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [3_000_000_000]}]}),
        (422,)))
    out.append(gateway("memory bomb on /v1/events", "resource",
                       events_request("publish_infer", b.inference([3_000_000_000])), (200,)))
    out.append(gateway("document over the event limit", "resource", put_request(
        "publisher", doc("huge"), m + " " + "y" * 1_500_000, 1), (413,), doc_ids=(doc("huge"),),
        marker=m))
    many = [b.document(doc(f"burst-{i}"), 1, "t") for i in range(20)]
    out.append(gateway("20 events from a key with a burst of 10", "resource",
                       events_request("small_events", *many), (413,),
                       doc_ids=tuple(e["data"]["doc_id"] for e in many)))
    out.append(gateway("6 KiB inference request from a key with a burst of 4", "resource",
                       Request("POST", "/v1/infer", "small_infer", {"model": "minilm", "inputs": [
                           {"name": "text", "datatype": "BYTES", "shape": [1],
                            "data": ["x" * 6000]}]}), (413,)))
    out.append(gateway("50 texts to embed from a key with a burst of 10", "resource",
                       Request("POST", "/v1/embed", "small_embed", {"texts": ["t"] * 50}),
                       (413,)))
    out.append(gateway(f"{FLOOD_REQUESTS} searches from a key with a burst of 5", "resource",
                       Request("GET", "/v1/search?q=oil", "flood"), (429,)))
    for via in ("gateway", "topic"):
        m = b.marker()
        d = doc(f"paragraph-{via}")
        text = pathological_paragraph(b.rng, m)
        reasons = {w: "too_many_chunks" for w in READERS["documents.v1"]}
        out.append(gateway("200,000-word paragraph", "resource", put_request(
            "publisher", d, text, 1), (), expect="dead_lettered", reasons=reasons,
            doc_ids=(d,), marker=m) if via == "gateway" else straight(
            b, "200,000-word paragraph", "resource", "documents.v1", b.document(d, 1, text),
            None, reasons=reasons, doc_ids=(d,), marker=m))

    # cross-scope (the gateway) and cross-topic (straight)
    planted = doc("planted")
    for name, key, event in (
            ("chunk.embedded with a 3-d vector, publish key", "publisher",
             b.chunk(planted, [0.1, 0.2, 0.3])),
            ("kg.changed, publish key", "publisher", b.envelope(KG_CHANGED, planted, {
                "doc_id": planted, "doc_version": 1, "entities": ["x"], "edges": []})),
            ("inference.requested, publish key", "publisher", b.inference(["hello"])),
            ("inference.completed, admin key", "admin", b.envelope(INFERENCE_COMPLETED, "c1", {
                "correlation_id": "c1", "model": "minilm", "status": "ok"})),
            ("a valid document beside a chunk.embedded, publish key", "publisher",
             b.chunk(planted, [0.5] * 384))):
        events_ = [event] if "beside" not in name else [b.document(doc("beside"), 1, "t"), event]
        out.append(gateway(name, "cross_scope", events_request(key, *events_), (403,),
                           doc_ids=(planted, doc("beside"))))
    for key in ("inferrer", "reader"):
        m = b.marker()
        out.append(gateway(f"document from a key without publish ({key})", "cross_scope",
                           put_request(key, doc(f"noscope-{key}"), m, 1), (403,),
                           doc_ids=(doc(f"noscope-{key}"),), marker=m))
    out.append(straight(b, "3-d vector straight to chunks", "cross_topic", "chunks.embedded.v1",
                        b.chunk(doc("c3"), [0.1, 0.2, 0.3]), "wrong_embedding",
                        doc_ids=(doc("c3"),)))
    out.append(straight(b, "another model's vector straight to chunks", "cross_topic",
                        "chunks.embedded.v1", b.chunk(doc("cm"), [0.05] * 384, model="other@1"),
                        "wrong_embedding", doc_ids=(doc("cm"),)))
    out.append(straight(b, "a chunk without a vector", "cross_topic", "chunks.embedded.v1",
                        b.chunk(doc("cn"), None), "no_vector", doc_ids=(doc("cn"),)))
    out.append(straight(b, "chunk.embedded on documents.v1", "cross_topic", "documents.v1",
                        b.chunk(doc("cd"), [0.05] * 384), "unknown_type", doc_ids=(doc("cd"),)))
    out.append(straight(b, "kg.changed on documents.v1", "cross_topic", "documents.v1",
                        b.envelope(KG_CHANGED, doc("kd"), {"doc_id": doc("kd"), "doc_version": 1}),
                        "unknown_type", doc_ids=(doc("kd"),)))
    m = b.marker()
    out.append(straight(b, "a document on chunks.embedded.v1", "cross_topic",
                        "chunks.embedded.v1", b.document(doc("dc"), 1, m), "unknown_type",
                        doc_ids=(doc("dc"),), marker=m))

    # version games
    for version in (MAX_VERSION + 1, 10**30):
        m = b.marker()
        d = doc(f"v{len(str(version))}")
        out.append(gateway(f"PUT at version {version}", "version",
                           put_request("publisher", d, m, version), (422,), doc_ids=(d,),
                           marker=m))
        m = b.marker()
        out.append(straight(b, f"version {version} straight", "version", "documents.v1",
                            b.document(d + "s", version, m), "invalid_payload",
                            doc_ids=(d + "s",), marker=m))
    out.append(gateway(f"DELETE at version {MAX_VERSION + 1}", "version", Request(
        "DELETE", f"/v1/documents/{doc('vdel')}?version={MAX_VERSION + 1}", "publisher"), (422,),
        doc_ids=(doc("vdel"),)))
    out.append(straight(b, f"delete at version {MAX_VERSION + 1} straight", "version",
                        "documents.v1", b.envelope(DOCUMENT_DELETED, doc("vdels"), {
                            "doc_id": doc("vdels"), "version": MAX_VERSION + 1}),
                        "invalid_payload", doc_ids=(doc("vdels"),)))
    out.append(straight(b, f"chunk at version {MAX_VERSION + 1} straight", "version",
                        "chunks.embedded.v1", b.chunk(doc("vc"), [0.05] * 384,
                                                      version=MAX_VERSION + 1),
                        "invalid_payload", doc_ids=(doc("vc"),)))
    for d in targets.stale:  # at version 2: version 1 again, with other text
        m = b.marker()
        out.append(gateway("an older version with other text, PUT after the newer", "version",
                           put_request("publisher", d, m, 1), (), expect="ignored",
                           doc_ids=(d,), marker=m))
        m = b.marker()
        out.append(straight(b, "an older version with other text, straight", "version",
                            "documents.v1", b.document(d, 1, m), None, expect="ignored",
                            doc_ids=(d,), marker=m))

    # id-length edges: 496 is the longest a document id may be (its chunk ids still fit)
    for length in (497, 511):
        d = "adv-" + "i" * (length - 4)
        m = b.marker()
        out.append(gateway(f"{length}-character id, PUT", "id_length",
                           put_request("publisher", d, m, 1), (422,), doc_ids=(d,), marker=m))
        m = b.marker()
        out.append(straight(b, f"{length}-character id, straight", "id_length", "documents.v1",
                            b.document(d, 1, m), "invalid_payload", doc_ids=(d,), marker=m))

    # subject and document disagree
    m = b.marker()
    out.append(gateway("subject is not the doc id, /v1/events", "subject", events_request(
        "publisher", b.document(doc("sa"), 1, m, subject=doc("sb"))), (200,),
        doc_ids=(doc("sa"), doc("sb")), marker=m))
    m = b.marker()
    out.append(straight(b, "subject is not the doc id, straight", "subject", "documents.v1",
                        b.document(doc("sc"), 1, m, subject=doc("sd")), "subject_mismatch",
                        doc_ids=(doc("sc"), doc("sd")), marker=m))
    for d in targets.other:  # a delete keyed apart from the live document it names
        out.append(straight(b, "a delete whose subject is another document", "subject",
                            "documents.v1", b.envelope(DOCUMENT_DELETED, doc("se"), {
                                "doc_id": d, "version": version_of[d] + 5}),
                            "subject_mismatch", doc_ids=(d, doc("se"))))
    out.append(straight(b, "a chunk keyed by another document", "subject", "chunks.embedded.v1",
                        b.chunk(doc("sf"), [0.05] * 384, subject=doc("sg")), "subject_mismatch",
                        doc_ids=(doc("sf"), doc("sg"))))
    out.append(straight(b, "kg.changed keyed by another document", "subject", "kg.changes.v1",
                        b.envelope(KG_CHANGED, doc("sh"), {"doc_id": doc("si"),
                                                          "doc_version": 1}),
                        "subject_mismatch", doc_ids=(doc("sh"), doc("si"))))

    # reused versions: the embedding worker dead-letters them; the graph treats the version
    # as applied (a replay), and neither store changes
    reused = {"embedding": "version_reused"}
    for i, d in enumerate(targets.reused):
        m = b.marker()
        if i == 0:
            out.append(gateway("the current version with other text, PUT", "reused",
                               put_request("publisher", d, m, version_of[d]), (),
                               expect="dead_lettered", reasons=reused, doc_ids=(d,), marker=m))
        else:
            out.append(straight(b, "the current version with other text, straight", "reused",
                                "documents.v1", b.document(d, version_of[d], m), None,
                                reasons=reused, doc_ids=(d,), marker=m))
            out.append(straight(b, "the current version with other metadata, straight",
                                "reused", "documents.v1",
                                b.document(d, version_of[d], text_of[d], metadata={"adv": "1"}),
                                None, reasons=reused, doc_ids=(d,)))
    return out
