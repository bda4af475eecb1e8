"""GraphStore: the knowledge graph's reads and writes, on either backend.

    (:Document {id, version, deleted})-[:MENTIONS {count, spans}]->(:Entity {id, name, type, aliases})
    (:Entity)-[:CO_OCCURS {weight}]->(:Entity)      weight = documents mentioning both
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ragstream.graph import cypher
from ragstream.graph.backends import CypherBackend
from ragstream.graph.model import (
    DocState, DocumentChange, GazetteerEntry, LinkedEntity, cooccurring,
)

OrphanPolicy = Literal["keep", "prune"]


class GraphConflict(Exception):
    """A document changed between the read and the write (another writer): retry the batch."""


@dataclass(frozen=True)
class GraphCounts:
    nodes: dict[str, int]
    edges: dict[str, int]
    edge_weights: dict[str, float]


class GraphStore:
    def __init__(self, backend: CypherBackend, orphans: OrphanPolicy = "keep"):
        self.backend = backend
        self.orphans = orphans
        self._schema_ready = False

    async def setup(self) -> None:
        """Create the constraints. Every write does it first if it has not been done, so a store
        can be built while the server is down (the first writes then wait: backpressure)."""
        await self.backend.ensure_schema()
        self._schema_ready = True

    async def _ready(self) -> None:
        if not self._schema_ready:
            await self.setup()

    async def _read(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        await self._ready()
        return await self.backend.read(query, params)

    async def _write(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        await self._ready()
        return await self.backend.write(query, params)

    async def close(self) -> None:
        await self.backend.close()

    # documents ----------------------------------------------------------------------------------

    async def document_states(self, doc_ids: Iterable[str]) -> dict[str, DocState]:
        rows = await self._read(cypher.READ_DOCUMENTS, {"ids": sorted(set(doc_ids))})
        return {doc: DocState(version, deleted, tuple(ents or ()), tuple(co or ()),
                              tuple(prev or ()), tuple(prev_co or ()))
                for doc, version, deleted, ents, co, prev, prev_co in rows}

    async def apply(self, changes: list[DocumentChange]) -> None:
        """Apply every change in one query, all or nothing: raise ``GraphConflict`` (and write
        nothing) if any document moved on since it was read."""
        if not changes:
            return
        rows = await self._write(cypher.APPLY_DOCUMENTS, apply_params(changes))
        conflicts = rows[0][0] if rows else [c.doc_id for c in changes]
        if conflicts:
            raise GraphConflict(f"documents changed concurrently: {sorted(conflicts)[:5]}")

    async def tidy(self, pairs: Iterable[tuple[str, str]], entity_ids: Iterable[str]) -> None:
        """Drop co-occurrence edges whose weight fell to zero and, by policy, entities no
        document mentions any more. Idempotent: safe to run again after a crash."""
        pair_rows = sorted({tuple(p) for p in pairs})
        if pair_rows:
            await self._write(cypher.DROP_EMPTY_EDGES, {"pairs": [list(p) for p in pair_rows]})
        ids = sorted(set(entity_ids))
        if self.orphans == "prune" and ids:
            await self._write(cypher.PRUNE_ORPHANS, {"ids": ids})

    # gazetteer ----------------------------------------------------------------------------------

    async def gazetteer(self, min_docs: int, limit: int) -> list[GazetteerEntry]:
        rows = await self._read(cypher.READ_GAZETTEER,
                                       {"min_docs": min_docs, "limit": limit})
        return [GazetteerEntry(id_, name, type_, tuple(aliases or ()),
                               tuple(vector) if vector is not None else None)
                for id_, name, type_, aliases, vector in rows]

    async def gazetteer_version(self) -> int:
        rows = await self._read(cypher.READ_GAZETTEER_VERSION, {})
        return rows[0][0] if rows else 0

    async def bump_gazetteer_version(self) -> int:
        return (await self._write(cypher.BUMP_GAZETTEER_VERSION, {}))[0][0]

    async def entities_without_embedding(self, limit: int) -> list[tuple[str, str, str]]:
        rows = await self._read(cypher.ENTITIES_WITHOUT_EMBEDDING, {"limit": limit})
        return [(id_, name, context or "") for id_, name, context in rows]

    async def set_embeddings(self, vectors: dict[str, list[float]]) -> None:
        await self._write(self.backend.dialect.set_embeddings,
                                 {"rows": [{"id": k, "vector": v} for k, v in vectors.items()]})

    # merges: audit and undo ---------------------------------------------------------------------

    async def merges(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Mention edges that hold a merge: which mentions were linked from another name."""
        rows = await self._read(cypher.READ_MERGES, {"limit": limit})
        return [{"doc": d, "entity": e, "name": n, "method": m, "score": sc,
                 "merged": [_merged(x) for x in merged]}
                for d, e, n, m, sc, merged in rows]

    async def unmerges(self) -> list[dict[str, str]]:
        return [{"own": o, "entity": e, "doc": d, "surface": s}
                for o, e, d, s in await self._read(cypher.READ_UNMERGES, {})]

    async def blocked_merges(self) -> frozenset[tuple[str, str]]:
        """(own id, entity id) pairs that resolution must not link again."""
        return frozenset((u["own"], u["entity"]) for u in await self.unmerges())

    async def unmerge(self, doc_id: str, entity_id: str, surface: str | None = None,
                      max_cooccurring: int = 50) -> dict[str, Any]:
        """Undo a merge in one document: its mentions of ``entity_id`` that came from another
        name (all of them, or those written ``surface``) go to the entity each would have been
        on its own. The document is rewritten by the same guarded query as a worker's write, so
        mentions, its entity lists and co-occurrence weights stay consistent; the undo is
        recorded, and the gazetteer version bumped, so workers reload it and never make that
        merge again. Raises ``LookupError`` if there is nothing to undo."""
        from ragstream.nlp.aliases import canonical_key
        from ragstream.nlp.normalise import entity_id as own_id_of, normalise

        state = (await self.document_states([doc_id])).get(doc_id)
        if state is None or state.deleted:
            raise LookupError(f"no live document {doc_id!r}")
        links = {row[0]: _linked_from_row(row)
                 for row in await self._read(cypher.READ_DOCUMENT_LINKS, {"doc": doc_id})}
        target = links.get(entity_id)
        if target is None:
            raise LookupError(f"document {doc_id!r} does not mention {entity_id!r}")
        moving = [m for m in map(_merged, target.merged)
                  if surface is None or m["surface"] == surface]
        if not moving:
            raise LookupError(f"nothing in {doc_id!r} was merged into {entity_id!r}"
                              + (f" as {surface!r}" if surface else ""))
        groups: dict[str, list[dict]] = {}
        for m in moving:
            own = own_id_of(m["cls"], canonical_key(m["cls"], normalise(m["surface"], m["cls"])))
            groups.setdefault(own, []).append(m)
        moved_spans = {(m["start"], m["end"]) for m in moving}
        moved_surfaces = {m["surface"] for m in moving}
        remaining = tuple(s for s in target.spans if s not in moved_spans)
        if remaining:
            links[entity_id] = replace(
                target, spans=remaining,
                surfaces=tuple(s for s in target.surfaces if s not in moved_surfaces),
                merged=tuple(x for x in target.merged if _merged(x) not in moving))
        else:
            del links[entity_id]
        for own, ms in groups.items():
            spans = tuple(sorted({(m["start"], m["end"]) for m in ms}))
            forms = tuple(sorted({m["surface"] for m in ms}))
            if own in links:
                have = links[own]
                links[own] = replace(have, spans=tuple(sorted(set(have.spans) | set(spans))),
                                     surfaces=tuple(sorted(set(have.surfaces) | set(forms))))
            else:
                links[own] = LinkedEntity(own, ms[0]["surface"], ms[0]["cls"], forms, spans,
                                          method="unmerged")
        entities = tuple(links[k] for k in sorted(links))
        change = DocumentChange(doc_id, state.version, False, state, entities,
                                cooccurring(entities, max_cooccurring))
        await self.apply([change])
        await self._write(cypher.RECORD_UNMERGES, {"rows": [
            {"id": f"{own}\x1f{entity_id}", "own": own, "entity": entity_id, "doc": doc_id,
             "surface": ms[0]["surface"]} for own, ms in sorted(groups.items())]})
        await self._write(cypher.DROP_ALIASES, {"id": entity_id, "surfaces": sorted(moved_surfaces)})
        await self.tidy((), [] if remaining else [entity_id])
        await self.bump_gazetteer_version()
        return {"doc": doc_id, "version": state.version, "from": entity_id, "to": sorted(groups),
                "mentions": len(moved_spans), "surfaces": sorted(moved_surfaces),
                # what kg.changes.v1 names, as for a worker's write: the GCN refreshes these
                "entities": sorted(set(state.entities) | set(links)),
                "edges": sorted(set(change.old_pairs) | set(change.new_pairs))}

    # inspection ---------------------------------------------------------------------------------

    async def links(self, entity_id: str) -> list[dict[str, Any]]:
        """How each document's mentions were linked to an entity: the merge audit trail."""
        rows = await self._read(cypher.READ_LINKS, {"id": entity_id})
        return [{"doc": d, "surfaces": s, "method": m, "score": sc, "spans": sp}
                for d, s, m, sc, sp in rows]

    async def mentions(self, doc_ids: Iterable[str]) -> list[tuple[str, str, list[str]]]:
        """(document, entity, spans) for every mention of the given documents."""
        rows = await self._read(cypher.READ_MENTIONS, {"ids": sorted(set(doc_ids))})
        return [(d, e, list(spans)) for d, e, spans in rows]

    async def counts(self) -> GraphCounts:
        nodes = {label: n for label, n in await self._read(cypher.COUNT_NODES, {})}
        edges, weights = {}, {}
        for rel, n, weight in await self._read(cypher.COUNT_EDGES, {}):
            edges[rel], weights[rel] = n, weight
        return GraphCounts(nodes, edges, weights)

    async def cooccurrence(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in await self._read(cypher.READ_COOCCURRENCE, {})]


def apply_params(changes: list[DocumentChange]) -> dict[str, Any]:
    """The parameters of APPLY_DOCUMENTS: what the batch does, aggregated here so the query does
    each piece of work once: one row per entity (its surfaces over the whole batch, the first
    mention's name, type and context) and one net weight change per co-occurrence pair. Rows are
    positional lists; their layout is documented beside the query."""
    docs, mentions = [], []
    entities: dict[str, list[Any]] = {}
    surfaces: dict[str, set[str]] = {}
    weights: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for c in changes:
        if c.doc_id in seen:
            raise ValueError(f"document {c.doc_id!r} twice in one batch: apply its newest change")
        seen.add(c.doc_id)
        base = c.base
        docs.append([c.doc_id, c.version, c.deleted, base.version if base else -1,
                     base.deleted if base else False, [e.id for e in c.entities],
                     list(c.cooccurring)])
        for pair in c.old_pairs:
            weights[pair] -= 1
        for pair in c.new_pairs:
            weights[pair] += 1
        for e in c.entities:
            forms = [text(s) for s in e.surfaces]
            mentions.append([c.doc_id, e.id, e.count, [f"{s}:{t}" for s, t in e.spans], forms,
                             e.method, e.score, [text(x) for x in e.merged]])
            if e.id not in entities:
                entities[e.id] = [e.id, text(e.name), e.type, text(e.context)]
                surfaces[e.id] = set(forms)
            else:
                surfaces[e.id].update(forms)
    for id_, row in entities.items():
        row.append(sorted(surfaces[id_]))
    return {"docs": docs, "entities": list(entities.values()), "mentions": mentions,
            "pairs": [[a, b, n] for (a, b), n in sorted(weights.items()) if n]}


def text(value: str) -> str:
    """Free text as the graph stores it: NUL, which FalkorDB rejects in any string, becomes
    U+FFFD (the replacement character), deliberately and on both backends, so one stray byte
    cannot fail a whole batch and the graphs of the two backends stay the same."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _merged(entry: str) -> dict[str, Any]:
    """"start:end:class:surface" (see LinkedEntity.merged) as a dict."""
    start, end, cls, surface = entry.split(":", 3)
    return {"start": int(start), "end": int(end), "cls": cls, "surface": surface}


def _linked_from_row(row: list[Any]) -> LinkedEntity:
    id_, name, type_, surfaces, spans, method, score, merged, context = row
    return LinkedEntity(id_, name, type_, tuple(surfaces or ()),
                        tuple(tuple(map(int, s.split(":"))) for s in spans or ()),
                        method or "exact", score, context or "", tuple(merged or ()))
