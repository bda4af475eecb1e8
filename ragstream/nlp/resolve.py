"""Resolution: which graph node each mention of a document is.

Per document, in order:
1. one class per surface: a name the NER labels differently within a document takes its
   majority label (ties: the first);
2. key = (class, normalised name); mentions with the same key are one entity; a gazetteer match
   (``ent_id``) is a direct link;
   A place's known short form takes its full name's key ("S.C." -> "south carolina", the
   built-in alias table of ``aliases.py``);
3. within the document, a short form joins the one longer name it fits (``_fits``): a bare
   first or last name ("Jobs" -> "Steve Jobs"), an organisation's acronym, leading words or
   inner words, a possessive or plural without its apostrophe, a misspelt long name, and the
   same name tagged with another class ("Paxar" PER after "Paxar Corp");
4. against the gazetteer (the alias table): a key that names exactly one known entity links to
   it; a key that names several, or a bare first/last name of known people, is disambiguated by
   the cosine similarity of its context embedding to each candidate's, linking only at or above
   the threshold;
5. otherwise it is a new entity whose id derives from its key.

Every link other than "exact" is recorded on the MENTIONS edge (method, score, surfaces, and
``merged``: each mention that would have been another entity on its own), and the surfaces join
the entity's aliases, so a merge can be audited and undone (``GraphStore.unmerge``). An undone
merge is in the gazetteer's ``blocked`` pairs, which every later resolution respects.
Resolution depends only on the document and the gazetteer snapshot, never on the order in which
documents arrive, so a replay or a restarted worker builds the same graph.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ragstream.graph.model import LinkedEntity
from ragstream.nlp.aliases import canonical_key
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
    # each mention's own (class, key): the entity it would be alone, to record merges
    own: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)

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
        blocked = self.gazetteer.blocked
        for m in mentions:
            cls = cls_of[_surface_key(m.text)]
            key = canonical_key(cls, normalise(m.text, cls))
            entry = self.gazetteer.entries.get(m.ent_id) if m.ent_id else None
            if entry is not None and (entity_id(cls, key), entry.id) not in blocked:
                c = clusters.setdefault(("@", entry.id), _Cluster(
                    entry.type, normalise(entry.name, entry.type), id=entry.id, name=entry.name,
                    method="gazetteer"))
            else:
                c = clusters.setdefault((cls, key), _Cluster(cls, key))
            c.mentions.append(m)
            c.own[(m.start, m.end)] = (cls, key)
        merged = _merge_within_document(list(clusters.values()), blocked)
        for c in merged:
            if not c.id:
                self._link_to_gazetteer(c)
        return merged

    def _link_to_gazetteer(self, c: _Cluster) -> None:
        own = entity_id(c.cls, c.key)
        blocked = self.gazetteer.blocked
        known = [x for x in self.gazetteer.exact(c.cls, c.key) if (own, x) not in blocked]
        if len(known) == 1:
            c.id, c.method = known[0], ("exact" if known[0] == own else "alias")
            c.name = self.gazetteer.entries[known[0]].name
            return
        c.id, c.name = own, _preferred_surface(c)
        if len(known) > 1:
            c.candidates = known
        elif c.cls == "PER" and len(c.tokens) == 1:
            c.candidates = [x for x in self.gazetteer.name_part(c.key) if (own, x) not in blocked]

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
            own = {span: cls_key for c in group for span, cls_key in c.own.items()}
            merged = sorted({f"{m.start}:{m.end}:{cls}:{m.text}" for m in mentions
                             for cls, key in [own[(m.start, m.end)]]
                             if entity_id(cls, key) != id_})
            out.append(LinkedEntity(
                id=id_, name=head.name, type=head.cls,
                surfaces=tuple(sorted({m.text for m in mentions})),
                spans=tuple(sorted({(m.start, m.end) for m in mentions})),
                method=head.method, score=head.score, context=first.context,
                merged=tuple(merged)))
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


def _merge_within_document(clusters: list[_Cluster],
                           blocked: frozenset[tuple[str, str]] = frozenset()) -> list[_Cluster]:
    """Fold each short form into the one longer name of the document it fits (see ``_fits``).

    Longest names first, so a chain folds step by step ("Moody's Investors" into "Moody's
    Investors Service Inc", then "Moody's" into that), and a short form is only folded when
    exactly one remaining name fits it."""
    kept: list[_Cluster] = []
    for c in sorted(clusters, key=_longest_first):
        fits = [o for o in kept if _fits(c, o)] if not c.id else []
        if len(fits) == 1 and blocked and (entity_id(c.cls, c.key), _would_be(fits[0])) in blocked:
            fits = []  # this merge was undone: keep them apart
        if len(fits) == 1:
            target = fits[0]
            target.mentions.extend(c.mentions)
            target.own.update(c.own)
            if target.method == "exact":
                target.method = "coref"
        else:
            kept.append(c)
    return sorted(kept, key=_first)


def _would_be(c: _Cluster) -> str:
    return c.id or entity_id(c.cls, c.key)


def _longest_first(c: _Cluster) -> tuple:
    # a trailing "s" does not count, so "Texaco" comes before "Texacos" and takes it in
    plural = c.key.endswith("s")
    return (-len(c.tokens), -(len(c.key) - plural), plural, _first(c))


def _first(c: _Cluster) -> int:
    return min(m.start for m in c.mentions)


def _fits(c: _Cluster, o: _Cluster) -> bool:
    """Can ``c`` be a shorter way of writing ``o`` within one document?

    - the same name once the longer one's class is applied ("Paxar" tagged PER, "Paxar Corp");
    - an apostrophe-less possessive or plural ("Texacos", "West Germanys");
    - a misspelling of a long name of the same class (one edit or transposition, 12+ chars);
    - a person's first or last name ("Jobs" -> "Steve Jobs");
    - an organisation's acronym ("IBM") or leading word; or, written after it, two or more of
      its words in a row ("Moody's Investors", "Bache Securities" -> "Prudential-Bache
      Securities").
    The NER often labels a short form with another class ("Edelman" MISC after "Asher Edelman"
    PER, "Paxar" PER after "Paxar Corp"): a cross-class fold is allowed only after the long form
    was first written, never between a place and anything else ("Georgia" is not "Georgia
    Power"), and a MISC word (a nationality) never takes part of an organisation's name."""
    same_class = c.cls == o.cls
    if not same_class and ("LOC" in (c.cls, o.cls) or _first(c) < _first(o)):
        return False
    as_o = {normalise(m.text, o.cls) for m in c.mentions}
    if o.key in as_o or any(k.endswith("s") and k[:-1] == o.key for k in as_o):
        return True
    ct, ot = c.tokens, o.tokens
    if (same_class and len(ct) == len(ot) and min(len(c.key), len(o.key)) >= 12
            and _edits(c.key, o.key) <= 1):  # 2 would make "South Carolina" "North Carolina"
        return True
    if len(ct) >= len(ot):
        return False
    if o.cls == "PER":
        return len(ct) == 1 and (ct[0] == ot[-1] or same_class and ct[0] == ot[0])
    if o.cls == "ORG" and c.cls != "MISC":  # "American" (NORP) is not "American Express"
        n = len(ct)
        if n == 1:
            return ct[0] == acronym(o.key) or ct[0] == ot[0]
        # several words of a longer name: only as a later short form of a name already written
        # ("General Motors" written first is not "General Motors Acceptance Corp")
        return _first(c) > _first(o) and any(ot[i:i + n] == ct for i in range(len(ot) - n + 1))
    return False


def _edits(a: str, b: str) -> int:
    """Levenshtein distance, with adjacent transpositions counted once."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        prev2, prev = prev, cur
    return prev[-1]


def _preferred_surface(c: _Cluster) -> str:
    """The entity's display name: of the surfaces that carry its full key (not a folded-in
    "Jobs"), the most frequent, then the longest, then the first."""
    mentions = [m for m in c.mentions if normalise(m.text, c.cls) == c.key] or c.mentions
    counts = Counter(m.text for m in mentions)
    order = {m.text: i for i, m in reversed(list(enumerate(mentions)))}
    return min(counts, key=lambda s: (-counts[s], -len(s), order[s]))
