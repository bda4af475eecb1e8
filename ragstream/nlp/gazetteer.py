"""The gazetteer: a snapshot of the graph's known entities, as ruler patterns and an alias table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ragstream.graph.model import GazetteerEntry
from ragstream.nlp.aliases import canonical_key
from ragstream.nlp.normalise import normalise


class Gazetteer:
    def __init__(self, entries: list[GazetteerEntry] = (), version: int = 0,
                 blocked: frozenset[tuple[str, str]] = frozenset()):
        self.version = version
        # (own id, entity id): merges undone by hand, never to be made again
        self.blocked = frozenset(blocked)
        self.entries = {e.id: e for e in entries}
        self._by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_name_part: dict[str, set[str]] = defaultdict(set)
        self._vectors = {e.id: np.asarray(e.embedding, dtype=np.float32)
                         for e in entries if e.embedding is not None}
        for e in entries:
            for surface in (e.name, *e.aliases):
                key = canonical_key(e.type, normalise(surface, e.type))
                self._by_key[(e.type, key)].add(e.id)
                tokens = key.split(" ")
                if e.type == "PER" and len(tokens) > 1:
                    self._by_name_part[tokens[0]].add(e.id)
                    self._by_name_part[tokens[-1]].add(e.id)

    def exact(self, cls: str, key: str) -> list[str]:
        """Entities with this name or alias, in a stable order."""
        return sorted(self._by_key.get((cls, key), ()))

    def name_part(self, token: str) -> list[str]:
        """People whose first or last name is ``token`` (a bare "Steve" or "Jobs")."""
        return sorted(self._by_name_part.get(token, ()))

    def vector(self, entity_id: str) -> np.ndarray | None:
        return self._vectors.get(entity_id)

    def patterns(self) -> list[dict]:
        """PHRASE patterns for the surfaces that name exactly one entity; an ambiguous one
        ("Paris", "Steve") is left to the NER and the resolver, which weigh the context."""
        owners: dict[str, set[str]] = defaultdict(set)
        for e in self.entries.values():
            for surface in (e.name, *e.aliases):
                # a bare "Jobs" or "Steve" (even an entity named just that) is never a direct
                # link: the resolver folds it into a full name of the document or weighs its context
                if e.type != "PER" or " " in surface.strip():
                    owners[surface].add(e.id)
        return [{"label": self.entries[next(iter(ids))].type, "pattern": surface,
                 "id": next(iter(ids))}
                for surface, ids in sorted(owners.items()) if len(ids) == 1]
