"""What the graph store reads and writes, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations


@dataclass(frozen=True, slots=True)
class LinkedEntity:
    """One entity a document mentions, with how the mentions were resolved to it."""

    id: str
    name: str
    type: str
    surfaces: tuple[str, ...]           # the forms the document used; they become aliases
    spans: tuple[tuple[int, int], ...]  # character offsets in the document text
    method: str = "exact"               # exact | gazetteer | alias | coref | embedding
    score: float | None = None          # the similarity, for embedding links
    context: str = ""                   # text around the first mention, for entity embeddings
    # the mentions linked here from another name (a merge): "start:end:class:surface", where
    # (class, surface) would have been their own entity; what ``GraphStore.unmerge`` undoes
    merged: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.spans)


@dataclass(frozen=True, slots=True)
class DocState:
    """A document as the graph holds it: the version applied and what it links."""

    version: int
    deleted: bool
    entities: tuple[str, ...] = ()
    cooccurring: tuple[str, ...] = ()
    prev_entities: tuple[str, ...] = ()
    prev_cooccurring: tuple[str, ...] = ()

    def supersedes(self, version: int, deleted: bool) -> bool:
        """True if this state is as new as (version, deleted) or newer: that event is a no-op.
        A delete outranks an upsert of the same version."""
        return (self.version, self.deleted) >= (version, deleted)


@dataclass(frozen=True, slots=True)
class DocumentChange:
    """Replace a document's mentions (or remove them: ``deleted``), given the state it replaces.

    ``base`` is the state read before the change; the write applies only if the graph still holds
    exactly that state, so the version check and the write are one atomic query."""

    doc_id: str
    version: int
    deleted: bool
    base: DocState | None
    entities: tuple[LinkedEntity, ...] = ()
    cooccurring: tuple[str, ...] = field(default=())

    @property
    def old_pairs(self) -> list[tuple[str, str]]:
        return pairs(self.base.cooccurring) if self.base else []

    @property
    def new_pairs(self) -> list[tuple[str, str]]:
        return pairs(self.cooccurring)


def pairs(ids: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """Co-occurrence edges among ``ids``, each stored once, from the smaller id to the larger."""
    return list(combinations(sorted(set(ids)), 2))


def cooccurring(entities: tuple[LinkedEntity, ...], limit: int) -> tuple[str, ...]:
    """The entities that get co-occurrence edges: the ``limit`` most mentioned, so a huge
    document cannot add a quadratic number of edges."""
    ranked = sorted(entities, key=lambda e: (-e.count, e.id))
    return tuple(sorted(e.id for e in ranked[:limit]))


@dataclass(frozen=True, slots=True)
class GazetteerEntry:
    id: str
    name: str
    type: str
    aliases: tuple[str, ...]
    embedding: tuple[float, ...] | None = None
