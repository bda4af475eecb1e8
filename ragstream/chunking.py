"""Token-aware chunking with stable chunk ids and content hashes.

Paragraphs are the unit: a paragraph becomes one chunk, or several overlapping token windows when
it is longer than the budget. Short paragraphs (headings, one-liners) join the paragraph after
them. Keeping chunk boundaries at paragraph boundaries makes an edit local: changing one paragraph
changes its own chunks, not every chunk after it, so only those are re-embedded.

Each chunk's text starts with the document title, so a chunk read alone (by the embedder, by BM25,
by a user) still says what it is about.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Protocol

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# a heading longer than this is cut so it cannot crowd out the body
_MAX_TITLE_TOKENS = 48


class Tokenizer(Protocol):
    """A Hugging Face fast tokenizer (the embedder's own, so budgets match what the model reads)."""

    def __call__(self, text: str, **kwargs): ...


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    position: int
    text: str
    text_hash: str


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(doc_id: str, position: int) -> str:
    return f"{doc_id}#{position}"


class TooManyChunks(ValueError):
    """The document would make more chunks than a document may have."""


class Chunker:
    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int, min_tokens: int = 32,
                 max_chunks: int | None = None):
        if not 0 <= overlap < size:
            raise ValueError(f"overlap {overlap} must be below the chunk size {size}")
        self.tokenizer = tokenizer
        self.size = size
        self.overlap = overlap
        self.min_tokens = min_tokens
        self.max_chunks = max_chunks

    def split(self, doc_id: str, text: str, title: str = "") -> list[Chunk]:
        """The document's chunks; ``TooManyChunks`` once the token counts show there would be
        more than ``max_chunks``, before any window is cut."""
        header = self._header(title)
        budget = self.size
        if header:
            budget = max(self.size - self._count([header])[0] - 1, self.min_tokens)
        groups = self._groups(text)
        if self.max_chunks is not None:
            # a lower bound on the windows (word alignment only adds some): a 200k-word
            # paragraph is refused here instead of being windowed first
            step = budget - min(self.overlap, budget // 2)
            least = sum(1 if tokens <= budget else math.ceil((tokens - budget) / step) + 1
                        for _, tokens in groups)
            if least > self.max_chunks:
                raise TooManyChunks(f"at least {least} chunks is over the limit of "
                                    f"{self.max_chunks}")
        pieces = []
        for group, tokens in groups:
            pieces += [group] if tokens <= budget else self._windows(group, budget)
        if self.max_chunks is not None and len(pieces) > self.max_chunks:
            raise TooManyChunks(f"{len(pieces)} chunks is over the limit of {self.max_chunks}")
        return [self._chunk(doc_id, i, f"{header}\n{p}" if header else p)
                for i, p in enumerate(pieces)]

    def _chunk(self, doc_id: str, position: int, text: str) -> Chunk:
        return Chunk(chunk_id(doc_id, position), position, text, text_hash(text))

    def _header(self, title: str) -> str:
        title = " ".join(title.split())
        if not title:
            return ""
        enc = self._encode(title)
        if len(enc["input_ids"]) <= _MAX_TITLE_TOKENS:
            return title
        return title[:enc["offset_mapping"][_MAX_TITLE_TOKENS - 1][1]]

    def _groups(self, text: str) -> list[tuple[str, int]]:
        """Paragraphs with their token counts, each short one joined to the paragraph after it."""
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        groups: list[tuple[str, int]] = []
        pending, pending_tokens = "", 0
        for paragraph, tokens in zip(paragraphs, self._count(paragraphs), strict=True):
            pending = f"{pending}\n\n{paragraph}" if pending else paragraph
            pending_tokens += tokens
            if pending_tokens >= self.min_tokens:
                groups.append((pending, pending_tokens))
                pending, pending_tokens = "", 0
        if pending and groups:
            last, last_tokens = groups.pop()
            groups.append((f"{last}\n\n{pending}", last_tokens + pending_tokens))
        elif pending:
            groups.append((pending, pending_tokens))
        return groups

    def _windows(self, text: str, budget: int) -> list[str]:
        """Overlapping windows of at most ``budget`` tokens, each starting on a word."""
        enc = self._encode(text)
        offsets = enc["offset_mapping"]
        word_ids = enc.word_ids()
        starts = [i for i in range(len(offsets)) if i == 0 or word_ids[i] != word_ids[i - 1]]
        # a long title shrinks the budget; the overlap must stay below it to make progress
        overlap = min(self.overlap, budget // 2)
        windows = []
        start = 0
        while True:
            end = min(start + budget, len(offsets))
            if end < len(offsets):
                # end before the word that straddles the budget, unless the word is the whole
                # window. Binary searches: a scan of every word start per window made a
                # 200k-word paragraph take 22 s on the event loop, and the worker was evicted.
                i = bisect.bisect_right(starts, end) - 1
                if starts[i] > start:
                    end = starts[i]
            windows.append(text[offsets[start][0]:offsets[end - 1][1]])
            if end >= len(offsets):
                return windows
            # next window: `overlap` tokens back, moved forward to a word start, always advancing
            target = max(end - overlap, start + 1)
            i = bisect.bisect_left(starts, target)
            start = starts[i] if i < len(starts) else end

    def _encode(self, text: str):
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

    def _count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
