"""``ragstream demo``: publish a slice of Reuters-21578 and follow what the stack makes of it.

Every figure is read from where the work lands, never estimated:

- receipts: the echo worker's diagnostic receipts on echo.v1;
- chunks: the demo documents' chunks on chunks.embedded.v1 (embedded), and those the live index
  answers queries from (searchable: the same replica ``ragstream search`` reads);
- entities: the demo documents' kg.changes.v1 events (linked);
- the GCN: once the gcn_refresh worker has gathered every one of those changes into the dirty set
  (its group committed past them), the jobs beat would run, in this process: the gazetteer
  refresh (the new entities' text embeddings, the GCN's input) and the incremental GCN refresh
  that ``ragstream refresh gcn --incremental`` runs; done when graph.embeddings.v1 carries the
  version it made visible;
- at the end, a hybrid search over the index, whose hits name the documents they come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field


from consumers.subscribe import subscribe
from producers import reuters
from producers.events import document_upserted
from ragstream.config import Settings
from ragstream.embedders import Embedder, load_embedder
from ragstream.gcn.jobs import run_job
from ragstream.graph import open_graph_store
from ragstream.vectorstores.search import Searcher
from ragstream.nlp.refresh import refresh_gazetteer
from ragstream.publisher import Publisher
from ragstream.transport.base import TopicPartition
from ragstream.transport.kafka import committed_offsets

FOLLOWED = ("echo.v1", "chunks.embedded.v1", "kg.changes.v1", "graph.embeddings.v1")


@dataclass
class Progress:
    documents: set[str]
    event_ids: set[str]  # of the published documents.v1 events: what the receipts answer
    receipts: set[str] = field(default_factory=set)
    embedded: set[str] = field(default_factory=set)  # chunk ids
    searchable: dict[str, str] = field(default_factory=dict)  # chunk id -> doc id
    linked: dict[str, set[str]] = field(default_factory=dict)  # doc id -> entity ids
    last_change: dict[int, int] = field(default_factory=dict)  # kg.changes.v1 partition -> offset
    gcn: str = "waiting for the entities"
    gcn_version: str | None = None  # the version the refresh made visible
    announced: set[str] = field(default_factory=set)  # versions seen on graph.embeddings.v1

    @property
    def gcn_done(self) -> bool:
        # a noop refresh keeps a version announced before: the topic holds it from its start
        return self.gcn_version is not None and self.gcn_version in self.announced

    @property
    def chunks_done(self) -> bool:
        return (set(self.searchable.values()) == self.documents
                and self.embedded <= self.searchable.keys())

    @property
    def entities(self) -> set[str]:
        return set().union(*self.linked.values())

    @property
    def done(self) -> bool:
        return (self.receipts == self.event_ids and self.chunks_done
                and self.linked.keys() == self.documents and self.gcn_done)

    def status(self) -> str:
        n = len(self.documents)
        return (f"receipts {len(self.receipts)}/{len(self.event_ids)} | "
                f"chunks {len(self.embedded)} embedded, {len(self.searchable)} searchable "
                f"({len(set(self.searchable.values()))}/{n} docs) | "
                f"entities {len(self.entities)} linked ({len(self.linked)}/{n} docs) | "
                f"GCN {self.gcn}"
                + (", announced on graph.embeddings.v1" if self.gcn_done else ""))


async def run(cfg: Settings, limit: int, wait: float, query: str,
              say: Callable[[str], None]) -> bool:
    """Publish ``limit`` articles, report progress until every stage is done or ``wait`` seconds
    have passed, then answer ``query``. True when every stage finished."""
    async with Publisher(cfg):  # a broker that is not there fails here, before anything loads
        pass
    docs = list(reuters.load(limit=limit))
    envelopes = [document_upserted(d.doc_id, d.text, version=1, title=d.title,
                                   source="ragstream/demo", metadata={"date": d.date})
                 for d in docs]
    progress = Progress({d.doc_id for d in docs}, {e.id for e in envelopes})
    say("loading the query embedder")
    searcher = await asyncio.to_thread(Searcher, cfg, load_embedder(cfg))
    tasks = [asyncio.create_task(follow(cfg, topic_name, progress)) for topic_name in FOLLOWED]
    gcn: asyncio.Task | None = None
    try:
        async with Publisher(cfg) as pub:
            await pub.publish(envelopes)
        say(f"published {len(envelopes)} Reuters articles to documents.v1")
        started = time.monotonic()
        shown = ""
        while True:
            await asyncio.to_thread(count_searchable, searcher, progress)
            if gcn is None and progress.linked.keys() == progress.documents \
                    and await gcn_worker_caught_up(cfg, progress.last_change):
                # a task: the progress lines go on while the jobs run
                gcn = asyncio.create_task(refresh_gcn(cfg, searcher.embedder, progress))
                tasks.append(gcn)
            elapsed = time.monotonic() - started
            if progress.status() != shown:
                shown = progress.status()
                say(f"[{elapsed:5.1f}s] {shown}")
            failed = [t.exception() for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0]
            if progress.done or elapsed > wait:
                break
            await asyncio.sleep(1)
        say(f"{len(progress.receipts)}/{len(progress.event_ids)} results in "
            f"{time.monotonic() - started:.1f}s")
        answer(searcher, query, say)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        searcher.close()
    return progress.done


async def follow(cfg: Settings, topic_name: str, progress: Progress) -> None:
    """Fold a result topic, from its start, into ``progress``."""
    async with contextlib.aclosing(subscribe(cfg, topic_name, from_beginning=True)) as events:
        async for envelope, record in events:
            data = envelope.data
            if topic_name == "echo.v1":
                if data.source_event_id in progress.event_ids:
                    progress.receipts.add(data.source_event_id)
            elif topic_name == "graph.embeddings.v1":
                if envelope.subject == cfg.kg.graph_name(cfg):
                    progress.announced.add(data.embedding_version)
            elif data.doc_id not in progress.documents:
                continue
            elif topic_name == "chunks.embedded.v1":
                progress.embedded.add(data.chunk_id)
            else:  # kg.changes.v1: the latest change names the document's entities
                progress.linked[data.doc_id] = set(data.entities)
                progress.last_change[record.partition] = max(
                    record.offset, progress.last_change.get(record.partition, -1))


def count_searchable(searcher: Searcher, progress: Progress) -> None:
    searchable: dict[str, str] = {}
    after = None
    while page := searcher.store.scan(after, 1_000):
        searchable |= {c.chunk_id: c.doc_id for c in page if c.doc_id in progress.documents}
        after = page[-1].chunk_id
    progress.searchable = searchable


async def gcn_worker_caught_up(cfg: Settings, last_change: dict[int, int]) -> bool:
    """Whether the gcn_refresh worker has committed past every demo change on kg.changes.v1:
    then their entities are in the dirty set the refresh job drains."""
    committed = await committed_offsets(
        cfg, cfg.group_id("gcn_refresh"),
        [TopicPartition("kg.changes.v1", p) for p in last_change])
    return all(committed[TopicPartition("kg.changes.v1", p)] > offset
               for p, offset in last_change.items())


async def refresh_gcn(cfg: Settings, embedder: Embedder, progress: Progress) -> None:
    """The two scheduled jobs the GCN waits on, as beat would run them: the gazetteer refresh
    gives new entities their text embeddings (the GCN's input features), then the incremental
    GCN refresh re-embeds the dirty neighbourhoods."""
    progress.gcn = "embedding the new entities' text (the gazetteer refresh)"
    store = await open_graph_store(cfg)
    try:
        gazetteer = await refresh_gazetteer(store, embedder, cfg.kg.embed_batch)
    finally:
        await store.close()
    progress.gcn = (f"refreshing, after {gazetteer['embedded']} new entity text embeddings "
                    f"(gazetteer version {gazetteer['version']})")
    report = await run_job("incremental", cfg)
    progress.gcn = (f"{report.mode} -> version {report.version}: {report.written} of "
                    f"{report.nodes} entity embeddings written in {report.seconds:.1f}s")
    progress.gcn_version = None if report.version is None else str(report.version)


def answer(searcher: Searcher, query: str, say: Callable[[str], None], k: int = 3) -> None:
    hits = searcher.search(query, k, per_document=True)
    say(f"search {query!r}: {len(hits)} hits")
    for i, hit in enumerate(hits, start=1):
        say(f"  {i}. {hit.doc_id}  score {hit.score:.4f}  {' '.join(hit.text.split())[:100]}")
