"""Names to keys: the rules that decide when two surface forms can be the same entity.

A key is ``(type class, normalised name)``, so Paris the city (LOC) and Paris the person (PER)
never share a node, while "Apple Inc." and "APPLE" do.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# OntoNotes labels (spaCy) to the four CoNLL classes. Numeric and temporal labels (DATE, MONEY,
# CARDINAL, ...) are not entities of the graph and map to nothing.
LABEL_CLASS: dict[str, str] = {
    "PERSON": "PER",
    "ORG": "ORG",
    "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "NORP": "MISC", "EVENT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
}
CLASSES = ("PER", "ORG", "LOC", "MISC")

CORPORATE_SUFFIXES = frozenset({
    "inc", "incorporated", "corp", "corporation", "co", "company", "cos", "ltd", "limited", "plc",
    "llc", "lp", "llp", "ag", "sa", "nv", "bv", "gmbh", "spa", "ab", "as", "oy", "kk", "pty",
    "holdings", "group",
})
PERSON_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "lord", "lady",
                           "president", "chairman", "minister", "senator", "judge", "gen", "rev"})

_PUNCT = re.compile(r"[^\w\s&]+", re.UNICODE)
_SPACE = re.compile(r"\s+")
_POSSESSIVE = re.compile(r"(?:'s|')$")


def normalise(name: str, cls: str) -> str:
    """NFKC, case-folded, punctuation dropped; corporate suffixes (ORG) and titles (PER) removed.

    A name of punctuation only keeps its case-folded self, so no name maps to the empty key."""
    folded = unicodedata.normalize("NFKC", name).replace("\u2019", "'").strip().casefold()
    text = _PUNCT.sub(" ", _POSSESSIVE.sub("", folded).replace("&", " & "))
    tokens = _SPACE.sub(" ", text).strip().split(" ")
    if tokens and tokens[0] == "the":
        tokens = tokens[1:]
    if cls == "ORG":
        while len(tokens) > 1 and tokens[-1] in CORPORATE_SUFFIXES:
            tokens.pop()
    elif cls == "PER":
        while len(tokens) > 1 and tokens[0] in PERSON_TITLES:
            tokens.pop(0)
    return " ".join(t for t in tokens if t) or folded


def entity_id(cls: str, key: str) -> str:
    """A stable id for a key: the same name and class give the same node in every process."""
    digest = hashlib.blake2b(f"{cls}\x1f{key}".encode(), digest_size=10).hexdigest()
    return f"{cls.lower()}-{digest}"


def acronym(key: str) -> str:
    """Initials of a multi-word key ("international business machines" -> "ibm")."""
    words = [w for w in key.split(" ") if w not in {"of", "and", "&", "for", "the"}]
    return "".join(w[0] for w in words) if len(words) > 1 else ""
