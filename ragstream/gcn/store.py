"""Reading the entity graph and writing versioned GCN embeddings, on either graph backend.

Uses issue 4's ``CypherBackend`` (FalkorDB or Neo4j) with this package's own templates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ragstream.gcn import cypher
from ragstream.gcn.graph import EntityGraph, EntityRow
from ragstream.graph.backends import CypherBackend

META_ID = "gcn"


@dataclass(frozen=True)
class VersionInfo:
    version: int
    model: str
    dimension: int
    changed_since_train: int


class EmbeddingStore:
    def __init__(self, backend: CypherBackend, *, write_batch: int = 1_000,
                 read_batch: int = 1_000, meta_id: str = META_ID):
        self.backend = backend
        self.write_batch = write_batch
        self.read_batch = read_batch
        self.meta_id = meta_id

    # the graph --------------------------------------------------------------------------------

    async def read_graph(self) -> EntityGraph:
        """The whole GCN graph: entities with a text embedding, and the edges between them."""
        nodes = await self.backend.read(cypher.READ_NODES, {})
        position = {internal: i for i, (internal, _, _) in enumerate(nodes)}
        edges = [(position[a], position[b], w) for a, b, w in
                 await self.backend.read(cypher.READ_EDGES, {})
                 if a in position and b in position]  # a node created between the two reads
        text = torch.tensor([vector for _, _, vector in nodes], dtype=torch.float32)
        pairs = torch.tensor([[a for a, _, _ in edges], [b for _, b, _ in edges]],
                             dtype=torch.long).reshape(2, -1)
        weights = torch.tensor([float(w) for _, _, w in edges], dtype=torch.float32)
        # no entity with a text embedding yet (a fresh stack, before the gazetteer refresh):
        # an empty graph, which the jobs answer with a no-op, not a reshape error
        text = text.reshape(len(nodes), -1) if nodes else torch.zeros((0, 0))
        return EntityGraph([id_ for _, id_, _ in nodes], text, pairs, weights)

    async def read_entities(self, ids: Iterable[str]) -> list[EntityRow]:
        ids = sorted(set(ids))
        rows: list[EntityRow] = []
        for start in range(0, len(ids), self.read_batch):
            for id_, vector, others, weights in await self.backend.read(
                    cypher.READ_ENTITIES, {"ids": ids[start:start + self.read_batch]}):
                rows.append(EntityRow(id_, vector, list(zip(others, map(float, weights)))))
        return rows

    # versions ---------------------------------------------------------------------------------

    async def current(self) -> VersionInfo | None:
        rows = await self.backend.read(cypher.READ_CURRENT, {"meta": self.meta_id})
        if not rows or rows[0][0] is None:
            return None
        version, model, dimension, changed = rows[0]
        return VersionInfo(version, model, dimension, changed or 0)

    async def write(self, version: int, ids: list[str], vectors: Tensor) -> int:
        """Write ``version``'s vectors into the entities' new slots; invisible until ``flip``."""
        query = cypher.WRITE_EMBEDDINGS[self.backend.dialect.name]
        written = 0
        values, step = vectors.tolist(), self.write_batch
        for start in range(0, len(ids), step):
            rows = [{"id": i, "vector": v}
                    for i, v in zip(ids[start:start + step], values[start:start + step])]
            result = await self.backend.write(query, {"rows": rows, "version": version})
            written += result[0][0] if result else 0
        return written

    async def roll_back_unpublished(self, current: int) -> int:
        rows = await self.backend.write(cypher.ROLL_BACK_UNPUBLISHED, {"current": current})
        return rows[0][0] if rows else 0

    async def flip(self, version: int, model: str, dimension: int,
                   changed_since_train: int) -> bool:
        """Make ``version`` the visible one, in one write. False if it already was (a resume)."""
        rows = await self.backend.write(cypher.FLIP, {
            "meta": self.meta_id, "version": version, "model": model, "dimension": dimension,
            "changed_since_train": changed_since_train})
        return bool(rows)

    # readers ----------------------------------------------------------------------------------

    async def visible(self, ids: Iterable[str] | None = None) -> tuple[int | None,
                                                                      dict[str, list[float]]]:
        """The visible version and its vectors (of ``ids``, or of every entity), read together."""
        if ids is None:
            rows = await self.backend.read(cypher.READ_VISIBLE, {"meta": self.meta_id})
        else:
            rows = await self.backend.read(cypher.READ_VISIBLE_IDS,
                                           {"meta": self.meta_id, "ids": sorted(set(ids))})
        if rows:
            return rows[0][0], {id_: list(vector) for _, id_, vector in rows}
        info = await self.current()
        return (info.version if info else None), {}

    async def written_at(self, version: int) -> set[str]:
        """The entities whose newest slot is ``version``: what that refresh wrote."""
        return {r[0] for r in await self.backend.read(cypher.READ_WRITTEN_AT,
                                                      {"version": version})}
