"""The adversarial phase of the chaos harness: input that is valid, or nearly, and hostile.

The run publishes the seeded history (testing/chaos.py) and, beside it, events from every
class of issue 15, through the gateway and straight to the topics:

- resource exhaustion: an inference request whose BYTES input is a 3-billion integer, a
  document over the event limit, requests that cost more than their key's burst (events,
  texts, an inference request by its size), a search flood, and a one-paragraph document of
  200,000 words that is over the chunk limit;
- cross-topic and cross-scope publishing: worker-only events (``chunk.embedded`` with a
  3-dimension vector, ``kg.changed``, ``inference.completed``) and inference requests from keys
  that may not publish them, documents from keys without ``publish``; straight to the topics,
  events of one topic's types on another, and chunks of another model or size;
- version games: versions past 2^53-1 (2^53, 10^30), and older versions with other text sent
  after the newer ones;
- id-length edges: 497- and 511-character document ids (the longest valid one, 496, is in the
  history and goes through the gateway);
- subject/doc mismatch, a delete whose subject names another document among them;
- reused versions: the current version of a document again with other text, or other metadata;
- crashes at each step of a batch (decoded, flushed, published, committed) holding several
  versions of one document, in the embedding, entity-linking and reindex workers
  (ragstream/runtime/failpoints.py: each step fires once, on the first batch holding two
  records of one document; the reindex worker's are the chunks of one document). The history's
  multi-version documents are sent with their versions back to back, so such batches come.

Every hostile event says what SHOULD happen to it: ``refused`` at the edge (the expected 4xx, or
an item rejected inside a 200 from ``/v1/events``), ``dead_lettered`` by exactly the expected
workers with exactly the expected reasons, ``ignored`` (an older version: no dead letter, no
effect), or ``accepted`` (the valid edges). Anything else is ``mishandled``; one that reached a
store (its document, a word only it carries, or a change to the document it targets, against
the clean run) is ``accepted_wrongly``. Search queries go to the gateway's ``/v1/search`` every
~0.3 s from the start of the hostile traffic to the end of the run; ``search_availability`` is
the fraction answered 2xx, and a hit that names a hostile document counts against it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from producers.events import document_upserted
from ragstream.embedders import MiniLMEmbedder
from ragstream.gateway.auth import new_key
from ragstream.publisher import encode
from ragstream.runtime import failpoints
from ragstream.stack import ManagedProcess, free_port
from schemas.catalogue import (
    CHUNK_EMBEDDED, DOCUMENT_DELETED, DOCUMENT_UPSERTED, INFERENCE_COMPLETED, INFERENCE_REQUESTED,
    KG_CHANGED,
)
from schemas.envelope import Envelope
from schemas.payloads import MAX_VERSION

# who reads each topic the hostile events go to, and so must dead-letter them
READERS = {"documents.v1": ("embedding", "entity_linking"), "chunks.embedded.v1": ("reindex",),
           "kg.changes.v1": ("gcn_refresh",)}
CRASHED_WORKERS = ("embedding", "entity_linking", "reindex")
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


# building hostile events ------------------------------------------------------------------------


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


# the phase --------------------------------------------------------------------------------------


class AdversarialPhase:
    """Sends the hostile events and the search queries while a chaos ``Run`` runs; judges each
    hostile event after the run."""

    def __init__(self, events: Sequence[Envelope], final: dict[str, tuple[int, bool]],
                 edge_docs: Sequence[str], seed: int, log: Callable[[str], None] = print):
        self.events, self.final, self.seed, self.log = list(events), final, seed, log
        self.edges = [e for e in events if e.subject in edge_docs]
        self.targets = choose_targets(events, final, edge_docs)
        self.hostile = hostile_events(events, final, self.targets, seed)
        self.accepted = [Hostile(f"valid edge {e.subject[:40]}...", "edge", "accepted",
                                 request=put_request("publisher", e.subject, e.data["text"],
                                                     e.data["version"], title=e.data["title"]),
                                 doc_ids=(e.subject,)) for e in self.edges]
        self.queries: list[tuple[int, int]] = []  # (status, hits naming a hostile document)
        self._words = sorted({w.lower() for e in events if e.type == DOCUMENT_UPSERTED
                              for w in e.data["title"].split() if w.isalpha() and len(w) > 3})
        self._sent = False
        self._tasks: list[asyncio.Task] = []
        self.gateway: ManagedProcess | None = None

    # before the run

    def messages(self) -> list[tuple[str, bytes | None, bytes]]:
        """The history without its edge documents (they go through the gateway), each crash
        target's versions back to back (so they meet in one batch), then the hostile events
        that go straight to the topics: after the history, since some of them must follow the
        versions they play against."""
        crash = set(self.targets.crash)
        order: list[Envelope] = []
        held: dict[str, list[Envelope]] = {}
        for e in self.events:
            if e.subject in crash:
                held.setdefault(e.subject, []).append(e)
        for e in self.events:
            if e.subject in crash:
                order += held.pop(e.subject, [])
            elif e not in self.edges:
                order.append(e)
        stream = [(m.topic, m.key, m.value) for m in map(encode, order)]
        return stream + [h.message for h in self.hostile if h.message is not None]

    def arm(self) -> dict[str, dict[str, list[str]]]:
        """The failpoints of each crashed worker: every step, each on the first batch that
        holds two records of one document (any document: two named ones per step left a step
        unfired when their versions fell into two batches)."""
        return {w: {s: [] for s in failpoints.STEPS} for w in CRASHED_WORKERS}

    @property
    def expected_dead_letters(self) -> int:
        return sum(len(h.reasons) for h in self.hostile if h.expect == "dead_lettered")

    # during the run

    async def begin(self, run) -> None:
        keys_file = run.dir / "api_keys.json"
        made = {name: new_key(name, *spec) for name, spec in KEYS.items()}
        keys_file.write_text(json.dumps([entry.model_dump() for _, entry in made.values()]))
        self.keys = {name: key for name, (key, _) in made.items()}
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.gateway = ManagedProcess(
            "gateway", [sys.executable, "-m", "ragstream", "gateway", "--port", str(port)],
            run.dir / "logs" / "gateway.log",
            env={**run.env, "RAGSTREAM_API_KEYS_FILE": str(keys_file),
                 "RAGSTREAM_GATEWAY_INFER_TIMEOUT_S": "2"})
        self.gateway.start()
        await asyncio.to_thread(self.gateway.wait_ready, lambda: httpx.get(
            self.url + "/healthz").status_code == 200, 60)
        self._tasks = [asyncio.create_task(self._traffic())]

    def sent(self) -> bool:
        # a failed phase counts as sent, so the run ends and ``end`` raises its error
        return self._sent or any(t.done() for t in self._tasks)

    async def end(self, run) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.gateway is not None:
            self.gateway.stop(20)
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                raise r

    async def _traffic(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            await self._warm(client)
            queries = asyncio.create_task(self._queries(client))
            try:
                for h in self.accepted + [h for h in self.hostile if h.request is not None]:
                    await self._send(client, h)
                self._sent = True
                self.log(f"[adversarial] {len(self.accepted)} edge and "
                         f"{sum(h.request is not None for h in self.hostile)} hostile requests "
                         "sent through the gateway")
                await queries  # until the run ends
            finally:
                queries.cancel()

    async def _warm(self, client: httpx.AsyncClient) -> None:
        """The first search loads the gateway's embedder: wait for it, uncounted."""
        deadline = time.monotonic() + 180
        while True:
            try:
                r = await client.get("/v1/search", params={"q": "oil"},
                                     headers=self._auth("reader"))
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway's search never answered 200")
            await asyncio.sleep(1)

    async def _queries(self, client: httpx.AsyncClient) -> None:
        rng = random.Random(f"{self.seed}:queries")
        while True:
            q = " ".join(rng.sample(self._words, 2)) if len(self._words) > 1 else "oil"
            try:
                r = await client.get("/v1/search", params={"q": q, "k": 10},
                                     headers=self._auth("reader"))
                hostile = sum(h["doc_id"].startswith("adv-") for h in r.json()["hits"]) \
                    if r.status_code == 200 else 0
                self.queries.append((r.status_code, hostile))
            except (httpx.HTTPError, ValueError, KeyError):
                self.queries.append((0, 0))
            await asyncio.sleep(0.3)

    async def _send(self, client: httpx.AsyncClient, h: Hostile) -> None:
        req = h.request
        repeats = FLOOD_REQUESTS if req.key == "flood" else 1
        statuses = []
        for _ in range(repeats):
            try:
                r = await client.request(req.method, req.path, json=req.body,
                                         headers=self._auth(req.key))
                statuses.append(r.status_code)
                h.answer = r.text[:300]
            except httpx.HTTPError as exc:
                statuses.append(0)
                h.answer = repr(exc)[:300]
        if repeats > 1:  # a flood: refused if every request past the burst was a 429
            burst = KEYS[req.key][2]
            h.status = 429 if all(s == 429 for s in statuses[burst + 1:]) and \
                all(s in (200, 429) for s in statuses) else max(statuses)
            return
        h.status = statuses[0]
        if h.status in (200, 202) and req.method in ("PUT", "POST"):
            body = r.json()
            h.event_id = body.get("id") or next(
                (x.get("id") for x in body.get("results", []) if x["status"] == "accepted"),
                None)
            if body.get("results"):
                h.answer = json.dumps(body["results"])[:300]

    def _auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}

    # after the run

    def judge(self, state: dict[str, Any], clean: dict[str, Any], dead_letters: list) -> Verdict:
        """Each hostile event's outcome against what it should have been."""
        history = set(self.final)
        by_event: dict[str, dict[str, str]] = {}
        for d in dead_letters:
            if d.event_id:
                by_event.setdefault(d.event_id, {})[d.worker] = d.reason
        for h in self.hostile + self.accepted:
            h.dead = by_event.get(h.event_id, {}) if h.event_id else {}
            h.reached = reached(h, state, clean, history)
            h.outcome = outcome(h)
        explained = {h.event_id for h in self.hostile if h.event_id and h.dead}
        unexplained = [d for d in dead_letters if d.event_id not in explained]
        answered = sum(200 <= s < 300 and not hostile for s, hostile in self.queries)
        return Verdict(self.hostile, self.accepted, len(self.queries), answered,
                       sum(n for _, n in self.queries), unexplained)


def reached(h: Hostile, state: dict[str, Any], clean: dict[str, Any], history: set[str]
            ) -> list[str]:
    """Where ``h`` left a trace: a hostile document in a store, a word only it carried in the
    index, or a history document it aimed at that differs from the clean run's."""
    where = []
    for doc in h.doc_ids:
        mine, theirs = _doc_in(state, doc), _doc_in(clean, doc)
        if doc in history:
            where += [f"{store}:{doc[:60]}" for store in ("index", "graph")
                      if mine[store] != theirs[store]]
        else:
            where += [f"{store}:{doc[:60]}" for store in ("index", "graph") if mine[store]]
    if h.marker and any(h.marker in text for text in state["texts"].values()):
        where.append(f"index:{h.marker}")
    return where


def _doc_in(state: dict[str, Any], doc: str) -> dict[str, Any]:
    chunks = sorted(v for v in state["index"]["chunks"].values() if v[0] == doc)
    graph = [d for d in state["graph"]["documents"] if d[0] == doc]
    return {"index": chunks, "graph": graph}


def outcome(h: Hostile) -> str:
    if h.reached and h.expect != "accepted":
        return "accepted_wrongly"
    refused = h.status in h.statuses and (h.status != 200 or '"rejected"' in h.answer)
    took = h.request is None or h.status in (200, 202) and not refused
    ok = {"refused": refused and not h.dead,
          "dead_lettered": took and h.dead == h.reasons,
          "ignored": took and not h.dead,
          "accepted": took and not h.dead and h.status == 202 and not h.reached}[h.expect]
    return h.expect if ok else "mishandled"


@dataclass
class Verdict:
    hostile: list[Hostile]
    accepted: list[Hostile]
    queries: int
    answered: int
    hostile_hits: int  # search hits that named a hostile document
    unexplained_dead_letters: list

    def count(self, outcome_: str) -> int:
        return sum(h.outcome == outcome_ for h in self.hostile)

    @property
    def search_availability(self) -> float:
        return round(self.answered / self.queries, 4) if self.queries else 0.0

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r for h in self.hostile if h.outcome == "dead_lettered"
                            for r in h.dead.values()))

    def summary(self) -> dict[str, Any]:
        return {"hostile_events": len(self.hostile),
                "hostile_refused": self.count("refused"),
                "hostile_dead_lettered": self.count("dead_lettered"),
                "hostile_dead_letter_reasons": self.reasons(),
                "hostile_ignored": self.count("ignored"),
                "hostile_accepted_wrongly": self.count("accepted_wrongly"),
                "hostile_mishandled": self.count("mishandled"),
                "edges_accepted": sum(h.outcome == "accepted" for h in self.accepted),
                "edges": len(self.accepted),
                "dead_letters_unexplained": len(self.unexplained_dead_letters),
                "search_queries": self.queries,
                "search_availability": self.search_availability}

    def problems(self) -> list[str]:
        """One line per event that did not end as it should, for the report."""
        lines = [f"{h.outcome}: {h.kind}/{h.name}: expected {h.expect} "
                 f"{h.statuses or ''}{h.reasons or ''}; got status {h.status} "
                 f"{h.answer[:120]!r}, dead letters {h.dead}, reached {h.reached[:3]}"
                 for h in self.hostile + self.accepted if h.outcome not in (h.expect,)]
        lines += [f"unexplained dead letter: {d}" for d in self.unexplained_dead_letters[:5]]
        return lines


def table(verdict: Verdict) -> str:
    """Outcomes by class of hostile event."""
    kinds = sorted({h.kind for h in verdict.hostile})
    outcomes = ("refused", "dead_lettered", "ignored", "accepted_wrongly", "mishandled")
    rows = [["class", "events", *outcomes]]
    for k in kinds:
        hs = [h for h in verdict.hostile if h.kind == k]
        rows.append([k, str(len(hs)), *(str(sum(h.outcome == o for h in hs)) for o in outcomes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
