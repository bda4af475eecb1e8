"""The entity graph the GCN embeds, as tensors: a snapshot of the graph store, and patching it.

An incremental refresh does not re-read the whole graph. It re-reads only the dirty entities
(their text embedding and every co-occurrence edge they have now) and patches the snapshot of the
version it builds on. Every edge change has a dirty endpoint (kg.changes.v1 names both), so
replacing the dirty entities' incidence lists makes the snapshot equal the store's graph again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ragstream.gcn.model import GraphTensors, build


@dataclass(frozen=True)
class EntityRow:
    """An entity as the store holds it now. ``vector`` None: no text embedding yet."""

    id: str
    vector: list[float] | None
    neighbours: list[tuple[str, float]]


@dataclass(frozen=True)
class EntityGraph:
    ids: list[str]
    text: Tensor     # (n, f) the entities' text embeddings
    pairs: Tensor    # (2, m) each co-occurrence edge once
    weights: Tensor  # (m,) co-occurrence counts

    @property
    def num_nodes(self) -> int:
        return len(self.ids)

    def tensors(self) -> GraphTensors:
        return build(self.text, self.pairs, self.weights)

    def index(self) -> dict[str, int]:
        return {id_: i for i, id_ in enumerate(self.ids)}

    def patched(self, dirty: set[str], rows: list[EntityRow]) -> tuple[EntityGraph, Tensor]:
        """This graph with the dirty entities replaced by their current rows.

        Returns the new graph and a mask of its *changed* nodes: the dirty entities still in the
        graph (their text may have changed) and both ends of every edge added, removed or
        reweighted (their degree, so their normalisation, changed). Nothing else changed."""
        present = {r.id: r for r in rows if r.vector is not None}
        keep = torch.tensor([id_ not in dirty or id_ in present for id_ in self.ids],
                            dtype=torch.bool)
        old_index = self.index()
        ids = [id_ for id_, k in zip(self.ids, keep.tolist()) if k]
        ids += sorted(id_ for id_ in present if id_ not in old_index)
        index = {id_: i for i, id_ in enumerate(ids)}

        old_to_new = torch.full((self.num_nodes,), -1, dtype=torch.long)
        old_to_new[keep] = torch.arange(int(keep.sum()))
        text = torch.zeros(len(ids), self.text.shape[1] or _dim(present))
        text[: int(keep.sum())] = self.text[keep]
        for id_, row in present.items():
            text[index[id_]] = torch.tensor(row.vector, dtype=torch.float32)

        dirty_old = torch.tensor([id_ in dirty for id_ in self.ids], dtype=torch.bool)
        a, b = self.pairs
        incident = dirty_old[a] | dirty_old[b]
        before = {_edge(self.ids[x], self.ids[y]): float(w) for x, y, w in zip(
            a[incident].tolist(), b[incident].tolist(), self.weights[incident].tolist())}
        after: dict[tuple[str, str], float] = {}
        for row in present.values():
            for other, weight in row.neighbours:
                if other in index:  # an entity without a text embedding is not in the graph yet
                    after[_edge(row.id, other)] = float(weight)
        new_pairs = torch.tensor([[index[x] for x, _ in after], [index[y] for _, y in after]],
                                 dtype=torch.long).reshape(2, -1)
        pairs = torch.cat([old_to_new[self.pairs[:, ~incident]], new_pairs], dim=1)
        weights = torch.cat([self.weights[~incident],
                             torch.tensor(list(after.values()), dtype=torch.float32)])

        changed = torch.zeros(len(ids), dtype=torch.bool)
        changed[[index[id_] for id_ in present]] = True
        moved = {e for e in before.keys() | after.keys() if before.get(e) != after.get(e)}
        changed[[index[end] for edge in moved for end in edge if end in index]] = True
        return EntityGraph(ids, text, pairs, weights), changed

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"ids": self.ids, "text": self.text, "pairs": self.pairs,
                    "weights": self.weights}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> EntityGraph:
        data = torch.load(path, weights_only=True)
        return cls(data["ids"], data["text"], data["pairs"], data["weights"])


def _dim(present: dict[str, EntityRow]) -> int:
    return len(next(iter(present.values())).vector) if present else 0


def _edge(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)
