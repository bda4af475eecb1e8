"""Resolution: which graph node each mention of a document is.

Per document, in order:
1. one class per surface: a name the NER labels differently within a document takes its
   majority label (ties: the first);
2. key = (class, normalised name); mentions with the same key are one entity; a gazetteer match
   (``ent_id``) is a direct link;
3. within the document, a bare first or last name joins the one full name it belongs to ("Jobs"
   -> "Steve Jobs"), and an acronym or a leading part of an organisation name joins that name;
4. against the gazetteer (the alias table): a key that names exactly one known entity links to
   it; a key that names several, or a bare first/last name of known people, is disambiguated by
   the cosine similarity of its context embedding to each candidate's, linking only at or above
   the threshold;
5. otherwise it is a new entity whose id derives from its key.

Every link other than "exact" is recorded on the MENTIONS edge (method, score, surfaces) and the
surfaces join the entity's aliases, so a merge can be audited and undone.
Resolution depends only on the document and the gazetteer snapshot, never on the order in which
documents arrive, so a replay or a restarted worker builds the same graph.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ragstream.graph.model import LinkedEntity
from ragstream.nlp.gazetteer import Gazetteer
from ragstream.nlp.normalise import acronym, entity_id, normalise
from ragstream.nlp.recognise import Mention

EmbedFn = Callable[[list[str]], np.ndarray]


@dataclass
class _Cluster:
    cls: str
    key: str
    mentions: list[Mention] = field(default_factory=list)
    id: str = ""
    name: str = ""
    method: str = "exact"
    score: float | None = None
    candidates: list[str] = field(default_factory=list)  # awaiting disambiguation

    @property
    def tokens(self) -> list[str]:
        return self.key.split(" ")


class Resolver:
    def __init__(self, gazetteer: Gazetteer | None = None, embed: EmbedFn | None = None,
                 threshold: float = 0.5):
        self.gazetteer = gazetteer or Gazetteer()
        self.embed = embed
        self.threshold = threshold

    def resolve(self, docs: list[list[Mention]]) -> list[tuple[LinkedEntity, ...]]:
        """Link the mentions of each document; ambiguous ones of the whole batch are embedded
        in one call."""
        clustered = [self._cluster(mentions) for mentions in docs]
        pending = [c for clusters in clustered for c in clusters if c.candidates]
        if pending:
            self._disambiguate(pending)
        return [self._linked(clusters) for clusters in clustered]

    # one document --------------------------------------------------------------------------------

    def _cluster(self, mentions: list[Mention]) -> list[_Cluster]:
        cls_of = _majority_class(mentions)
        clusters: dict[tuple[str, str], _Cluster] = {}
        for m in mentions:
            entry = self.gazetteer.entries.get(m.ent_id) if m.ent_id else None
            if entry is not None:
                c = clusters.setdefault(("@", entry.id), _Cluster(
                    entry.type, normalise(entry.name, entry.type), id=entry.id, name=entry.name,
                    method="gazetteer"))
            else:
                cls = cls_of[_surface_key(m.text)]
                key = normalise(m.text, cls)
                c = clusters.setdefault((cls, key), _Cluster(cls, key))
            c.mentions.append(m)
        merged = _merge_within_document(list(clusters.values()))
        for c in merged:
            if not c.id:
                self._link_to_gazetteer(c)
        return merged

    def _link_to_gazetteer(self, c: _Cluster) -> None:
        own = entity_id(c.cls, c.key)
        known = self.gazetteer.exact(c.cls, c.key)
        if len(known) == 1:
            c.id, c.method = known[0], ("exact" if known[0] == own else "alias")
            c.name = self.gazetteer.entries[known[0]].name
            return
        c.id, c.name = own, _preferred_surface(c)
        if len(known) > 1:
            c.candidates = known
        elif c.cls == "PER" and len(c.tokens) == 1:
            c.candidates = self.gazetteer.name_part(c.key)

    def _disambiguate(self, pending: list[_Cluster]) -> None:
        usable = [c for c in pending
                  if any(self.gazetteer.vector(x) is not None for x in c.candidates)]
        if not usable or self.embed is None:
            return
        contexts = self.embed([c.mentions[0].context for c in usable])
        for c, vector in zip(usable, contexts, strict=True):
            scored = [(float(vector @ v), x) for x in c.candidates
                      if (v := self.gazetteer.vector(x)) is not None]
            score, best = max(scored, key=lambda s: (s[0], s[1]))
            if score >= self.threshold:
                c.id, c.name = best, self.gazetteer.entries[best].name
                c.method, c.score = "embedding", round(score, 4)

    @staticmethod
    def _linked(clusters: list[_Cluster]) -> tuple[LinkedEntity, ...]:
        # Two clusters can land on one entity (an alias and the name itself): join them.
        by_id: dict[str, list[_Cluster]] = defaultdict(list)
        for c in clusters:
            by_id[c.id].append(c)
        out = []
        for id_, group in sorted(by_id.items()):
            head = min(group, key=lambda c: (c.method != "exact", c.mentions[0].start))
            mentions = [m for c in group for m in c.mentions]
            first = min(mentions, key=lambda m: m.start)
            out.append(LinkedEntity(
                id=id_, name=head.name, type=head.cls,
                surfaces=tuple(sorted({m.text for m in mentions})),
                spans=tuple(sorted({(m.start, m.end) for m in mentions})),
                method=head.method, score=head.score, context=first.context))
        return tuple(out)


def _surface_key(text: str) -> str:
    return normalise(text, "")


def _majority_class(mentions: list[Mention]) -> dict[str, str]:
    votes: dict[str, Counter] = defaultdict(Counter)
    first_seen: dict[tuple[str, str], int] = {}
    for i, m in enumerate(mentions):
        k = _surface_key(m.text)
        votes[k][m.cls] += 1
        first_seen.setdefault((k, m.cls), i)
    return {k: min(c, key=lambda cls: (-c[cls], first_seen[(k, cls)])) for k, c in votes.items()}


def _merge_within_document(clusters: list[_Cluster]) -> list[_Cluster]:
    """Fold a bare name part, acronym or leading part into the one longer name it fits."""
    kept = []
    for c in clusters:
        target = _unique_container(c, clusters)
        if target is None:
            kept.append(c)
        else:
            target.mentions.extend(c.mentions)
            if target.method == "exact":
                target.method = "coref"
    return kept


def _unique_container(c: _Cluster, clusters: list[_Cluster]) -> _Cluster | None:
    if c.id or len(c.tokens) != 1 or c.cls not in ("PER", "ORG"):
        return None
    token = c.key
    fits = []
    for other in clusters:
        if other is c or other.cls != c.cls or len(other.tokens) < 2:
            continue
        if c.cls == "PER" and token in (other.tokens[0], other.tokens[-1]):
            fits.append(other)
        elif c.cls == "ORG" and (token == acronym(other.key) or other.tokens[0] == token):
            fits.append(other)
    return fits[0] if len(fits) == 1 else None


def _preferred_surface(c: _Cluster) -> str:
    """The entity's display name: of the surfaces that carry its full key (not a folded-in
    "Jobs"), the most frequent, then the longest, then the first."""
    mentions = [m for m in c.mentions if normalise(m.text, c.cls) == c.key] or c.mentions
    counts = Counter(m.text for m in mentions)
    order = {m.text: i for i, m in reversed(list(enumerate(mentions)))}
    return min(counts, key=lambda s: (-counts[s], -len(s), order[s]))
