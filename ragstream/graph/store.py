"""GraphStore: the knowledge graph's reads and writes, on either backend.

    (:Document {id, version, deleted})-[:MENTIONS {count, spans}]->(:Entity {id, name, type, aliases})
    (:Entity)-[:CO_OCCURS {weight}]->(:Entity)      weight = documents mentioning both
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ragstream.graph import cypher
from ragstream.graph.backends import CypherBackend
from ragstream.graph.model import DocState, DocumentChange, GazetteerEntry

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
    mention's name, type and context) and one net weight change per co-occurrence pair."""
    docs, mentions = [], []
    entities: dict[str, dict[str, Any]] = {}
    surfaces: dict[str, set[str]] = {}
    weights: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for c in changes:
        if c.doc_id in seen:
            raise ValueError(f"document {c.doc_id!r} twice in one batch: apply its newest change")
        seen.add(c.doc_id)
        base = c.base
        docs.append({"doc": c.doc_id, "version": c.version, "deleted": c.deleted,
                     "base_version": base.version if base else -1,
                     "base_deleted": base.deleted if base else False,
                     "entities": [e.id for e in c.entities], "cooccurring": list(c.cooccurring)})
        for pair in c.old_pairs:
            weights[pair] -= 1
        for pair in c.new_pairs:
            weights[pair] += 1
        for e in c.entities:
            forms = [text(s) for s in e.surfaces]
            mentions.append({"doc": c.doc_id, "id": e.id, "count": e.count,
                             "spans": [f"{s}:{t}" for s, t in e.spans], "surfaces": forms,
                             "method": e.method, "score": e.score})
            if e.id not in entities:
                entities[e.id] = {"id": e.id, "name": text(e.name), "type": e.type,
                                  "context": text(e.context)}
                surfaces[e.id] = set(forms)
            else:
                surfaces[e.id].update(forms)
    for id_, row in entities.items():
        row["surfaces"] = sorted(surfaces[id_])
    return {"docs": docs, "entities": list(entities.values()), "mentions": mentions,
            "pairs": [[a, b, n] for (a, b), n in sorted(weights.items()) if n]}


def text(value: str) -> str:
    """Free text as the graph stores it: NUL, which FalkorDB rejects in any string, becomes
    U+FFFD (the replacement character), deliberately and on both backends, so one stray byte
    cannot fail a whole batch and the graphs of the two backends stay the same."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value
