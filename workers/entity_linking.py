"""Entity linking: keeps the knowledge graph current as documents arrive, change and disappear.

    documents.v1 -> spaCy NER + gazetteer -> resolution -> GraphStore (one UNWIND query per batch)
                 -> kg.changes.v1 (the entities and edges each document touched)

Exactly once, in effect: the runtime flushes the graph, then publishes, then commits. Each write
applies only over the document state it was computed from (checked inside the same query), so a
replayed or older event changes nothing; a replay of an event that was applied before a crash
re-publishes the same kg.changes event (same id) from what the Document node recorded.

A document over the chunk limit is dead-lettered (``too_many_chunks``), counted by the embedding
worker's chunker, so the graph never holds a document the index refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ragstream.chunking import Chunker, TooManyChunks
from ragstream.embedders import load_tokenizer
from ragstream.errors import unavailable_types
from ragstream.config import KgSettings
from ragstream.graph import GraphStore
from ragstream.graph.model import DocState, DocumentChange, LinkedEntity, cooccurring, pairs
from ragstream.nlp.gazetteer import Gazetteer
from ragstream.nlp.recognise import Recogniser
from ragstream.nlp.resolve import Resolver
from ragstream.runtime import Batch, Event, Sink, Worker, WorkerContext
from schemas.catalogue import DOCUMENT_DELETED, KG_CHANGED
from schemas.payloads import DocumentUpserted, KgChanged

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GraphWrite:
    """A document's change (None on a replay), and what to tidy after it."""

    change: DocumentChange | None
    dropped_pairs: tuple[tuple[str, str], ...]
    dropped_entities: tuple[str, ...]


class GraphSink(Sink):
    """One APPLY query for the whole batch (it also drops the edges whose weight fell to zero),
    then the idempotent tidy-up: orphans by policy, and for replays the zero-weight edges too,
    so a crash between the two heals itself."""

    def __init__(self, store: GraphStore):
        self.store = store

    async def flush(self, items: list[GraphWrite]) -> None:
        await self.store.apply([i.change for i in items if i.change is not None])
        await self.store.tidy([p for i in items if i.change is None for p in i.dropped_pairs],
                              [e for i in items for e in i.dropped_entities])


def document_text(payload: DocumentUpserted) -> str:
    """What the recogniser reads; MENTIONS spans are offsets into it."""
    return f"{payload.title}\n\n{payload.text}" if payload.title else payload.text


class EntityLinkingWorker(Worker):
    name = "entity_linking"
    consumes = ("documents.v1",)
    emits = ("kg.changes.v1",)

    def __init__(self, kg: KgSettings | None = None, recogniser: Recogniser | None = None):
        """``recogniser``: an already loaded one to reuse (tests load spaCy once)."""
        self.kg = kg  # None: the settings' (RAGSTREAM_KG_*)
        self.recogniser = recogniser

    async def setup(self, ctx: WorkerContext) -> None:
        # The store connects and creates its constraints on first use: a worker starts while the
        # graph store is down, and its batches wait (backpressure) until the store is back.
        self.kg = self.kg or ctx.settings.kg
        self._ctx = ctx
        self.store = GraphStore(ctx.graph_backend(self.kg), self.kg.orphans)
        self.sinks = {"graph": GraphSink(self.store)}
        if self.recogniser is None:
            self.recogniser = await asyncio.to_thread(
                Recogniser, self.kg.spacy_model, self.kg.nlp_batch_size)
        self.recogniser.use_gazetteer([])
        self.resolver = Resolver(Gazetteer(), self._embed, self.kg.link_threshold)
        s = ctx.settings
        self.chunker = Chunker(await asyncio.to_thread(load_tokenizer), s.chunk_tokens,
                               s.chunk_overlap_tokens, max_chunks=s.max_chunks_per_document)
        self._gazetteer_checked = -float("inf")
        try:
            await self._refresh_gazetteer()
        except unavailable_types() as exc:
            log.warning("graph store unavailable at start; batches wait for it",
                        extra={"error": repr(exc)[:300]})

    async def teardown(self) -> None:
        await self.store.close()

    async def process(self, batch: Batch) -> None:
        await self._refresh_gazetteer()
        states = await self.store.document_states(e.payload.doc_id for e in batch.events)
        fresh = []
        for event in batch.events:
            state = states.get(event.payload.doc_id)
            if state is not None and state.supersedes(*_rank(event)):
                if (state.version, state.deleted) == _rank(event):
                    self._replay(batch, event, state)
                continue  # older than the graph: nothing to do
            fresh.append(event)
        refused = await asyncio.to_thread(self._over_chunk_limit, [
            e for e in fresh if e.type != DOCUMENT_DELETED])
        latest: dict[str, Event] = {}
        for event in fresh:
            if id(event) in refused:
                batch.reject(event, "too_many_chunks", refused[id(event)])
                continue
            doc_id = event.payload.doc_id
            if doc_id not in latest or _rank(event) > _rank(latest[doc_id]):
                latest[doc_id] = event  # a later version in this batch supersedes it

        upserts = [e for e in latest.values() if e.type != DOCUMENT_DELETED]
        linked = await asyncio.to_thread(self._link, [document_text(e.payload) for e in upserts])
        entities = {e.payload.doc_id: ents for e, ents in zip(upserts, linked, strict=True)}
        for doc_id, event in latest.items():
            self._change(batch, event, states.get(doc_id), entities.get(doc_id, ()))

    def _over_chunk_limit(self, events: list[Event]) -> dict[int, str]:
        """The documents the index refuses for their chunk count (``too_many_chunks``), by
        ``id(event)`` (a reused version shares its original's event id), counted by the
        embedding worker's own chunker: the graph refuses them alike. A
        200k-word paragraph that the index refused took the NER 81 s and 3.4 GB here, and put
        20,000 entities in the graph of a document search never had."""
        refused = {}
        for event in events:
            doc = event.payload
            try:
                self.chunker.split(doc.doc_id, doc.text, doc.title)
            except TooManyChunks as exc:
                refused[id(event)] = f"{exc} (the index refuses it too)"
        return refused

    def _link(self, texts: list[str]) -> list[tuple[LinkedEntity, ...]]:
        return self.resolver.resolve(self.recogniser.recognise(texts)) if texts else []

    def _change(self, batch: Batch, event: Event, base: DocState | None,
                entities: tuple[LinkedEntity, ...]) -> None:
        version, deleted = _rank(event)
        change = DocumentChange(event.payload.doc_id, version, deleted, base, entities,
                                cooccurring(entities, self.kg.max_cooccurring))
        old_entities = base.entities if base else ()
        new_ids = {e.id for e in entities}
        batch.write("graph", GraphWrite(
            change, tuple(set(change.old_pairs) - set(change.new_pairs)),
            tuple(sorted(set(old_entities) - new_ids))))
        self._emit(batch, event, set(old_entities) | new_ids,
                   set(change.old_pairs) | set(change.new_pairs))

    def _replay(self, batch: Batch, event: Event, state: DocState) -> None:
        """Applied before, perhaps not published: publish again from the recorded transition."""
        old_pairs, new_pairs = set(pairs(state.prev_cooccurring)), set(pairs(state.cooccurring))
        batch.write("graph", GraphWrite(None, tuple(old_pairs - new_pairs),
                                        tuple(sorted(set(state.prev_entities) - set(state.entities)))))
        self._emit(batch, event, set(state.prev_entities) | set(state.entities),
                   old_pairs | new_pairs)

    @staticmethod
    def _emit(batch: Batch, event: Event, entity_ids: set[str],
              edges: set[tuple[str, str]]) -> None:
        version, deleted = _rank(event)
        batch.emit("kg.changes.v1", KG_CHANGED, KgChanged(
            doc_id=event.payload.doc_id, doc_version=version, entities=sorted(entity_ids),
            edges=sorted(edges), deleted=deleted), cause=event)

    async def _refresh_gazetteer(self) -> None:
        """Reload the ruler and alias table when the refresh task published a new snapshot."""
        now = time.monotonic()
        if now - self._gazetteer_checked < self.kg.gazetteer_poll_s:
            return
        version = await self.store.gazetteer_version()
        self._gazetteer_checked = now  # only once read: a store that is down is asked again
        if version == self.resolver.gazetteer.version:
            return
        entries = await self.store.gazetteer(self.kg.gazetteer_min_docs,
                                             self.kg.gazetteer_max_entities)
        gazetteer = Gazetteer(entries, version, await self.store.blocked_merges())
        await asyncio.to_thread(self.recogniser.use_gazetteer, gazetteer.patterns())
        self.resolver.gazetteer = gazetteer
        log.info("gazetteer loaded", extra={"version": version, "entities": len(entries)})

    def _embed(self, texts: list[str]):
        # the deployment's embedder, loaded on the first ambiguous mention
        return self._ctx.embedder.embed(texts)


def _rank(event: Event) -> tuple[int, bool]:
    """Order of events of one document: by version; a delete outranks an upsert of its version."""
    return event.payload.version, event.type == DOCUMENT_DELETED
