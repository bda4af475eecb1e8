"""The adversarial phase of the chaos harness: input that is valid, or nearly, and hostile.

The run publishes the seeded history (testing/chaos.py) and, beside it, events from every
class of issue 15 (built in testing/hostile_events.py), through the gateway and straight to the
topics:

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
the fraction answered 2xx, and a hit that names a hostile document counts against it. With the
embedded Qdrant engine no search runs: only the ``reindex_qdrant`` worker's process can open it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ragstream.gateway.auth import new_key
from ragstream.publisher import encode
from ragstream.runtime import failpoints
from ragstream.stack import ManagedProcess, free_port
from schemas.catalogue import DOCUMENT_UPSERTED
from schemas.envelope import Envelope
from testing.hostile_events import (FLOOD_REQUESTS, KEYS, Hostile, choose_targets,
                                    hostile_events, put_request)
from workers import reindex_worker

CRASHED_WORKERS = ("embedding", "entity_linking", "reindex")


# the phase --------------------------------------------------------------------------------------


class AdversarialPhase:
    """Sends the hostile events and the search queries while a chaos ``Run`` runs; judges each
    hostile event after the run."""

    def __init__(self, events: Sequence[Envelope], final: dict[str, tuple[int, bool]],
                 edge_docs: Sequence[str], seed: int, log: Callable[[str], None] = print,
                 store: str = "embedded"):
        self.events, self.final, self.seed, self.log = list(events), final, seed, log
        self.edges = [e for e in events if e.subject in edge_docs]
        self.targets = choose_targets(events, final, edge_docs)
        self.hostile = hostile_events(events, final, self.targets, seed)
        # the store's own reindex worker is the one that reads chunks.embedded.v1 in this run
        self.reindex = reindex_worker(store)
        for h in self.hostile:
            h.reasons = {self.reindex if w == "reindex" else w: r for w, r in h.reasons.items()}
        self.search = store != "qdrant"  # an embedded Qdrant opens in one process only
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
        return {self.reindex if w == "reindex" else w: {s: [] for s in failpoints.STEPS}
                for w in CRASHED_WORKERS}

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
            if self.search:
                await self._warm(client)
            queries = asyncio.create_task(self._queries(client) if self.search
                                          else asyncio.sleep(0))
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
            # where the gateway cannot search the store, those inside the burst answer 503
            answered = (200, 429) if self.search else (200, 429, 503)
            h.status = 429 if all(s == 429 for s in statuses[burst + 1:]) and \
                all(s in answered for s in statuses) else max(statuses)
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
                       sum(n for _, n in self.queries), unexplained, self.search)


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
    searched: bool = True  # False where the gateway cannot open the store (embedded Qdrant)

    def count(self, outcome_: str) -> int:
        return sum(h.outcome == outcome_ for h in self.hostile)

    @property
    def search_availability(self) -> float | None:
        if not self.searched:
            return None
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
