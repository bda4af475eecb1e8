"""The two searchable halves of the hybrid index, each updated in place by upsert and delete.

- Dense: a usearch HNSW graph (cosine, float32). Keys are 63-bit hashes of the chunk ids, so every
  replica and every rebuild gives a chunk the same key.
- Sparse: a tantivy BM25 index over the chunk text with English stemming, in its own directory.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import tantivy
import torch  # noqa: F401  before usearch: the other order makes a later torch_geometric import hang
from usearch.index import Index

CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256
_WRITER_HEAP = 64_000_000
_WORD = re.compile(r"\w+")


def chunk_key(chunk_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(chunk_id.encode(), digest_size=8).digest(), "big") >> 1


class DenseSegment:
    def __init__(self, index: Index | None = None):
        self._index = index  # created on the first vector, when the dimension is known

    @classmethod
    def load(cls, path: Path) -> DenseSegment:
        return cls(Index.restore(str(path)))

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def save(self, path: Path) -> None:
        if self._index is not None:
            self._index.save(str(path))

    def upsert(self, chunk_ids: list[str], vectors: np.ndarray) -> None:
        if not chunk_ids:
            return
        if self._index is None:
            self._index = Index(ndim=vectors.shape[1], metric="cos", dtype="f32",
                                connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                                expansion_search=EXPANSION_SEARCH)
        keys = np.array([chunk_key(c) for c in chunk_ids], dtype=np.uint64)
        self._index.remove(keys)  # usearch has no in-place update: remove, then add
        self._index.add(keys, vectors)

    def delete(self, chunk_ids: list[str]) -> None:
        if chunk_ids and self._index is not None:
            self._index.remove(np.array([chunk_key(c) for c in chunk_ids], dtype=np.uint64))

    def search(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(key, cosine similarity), best first."""
        return self.search_many(vector[np.newaxis, :], n)[0]

    def search_many(self, vectors: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
        """``search`` for each row of ``vectors``, in one call (usearch spreads it on threads)."""
        if not len(self):
            return [[] for _ in vectors]
        found = self._index.search(vectors, min(n, len(self)))
        if found.keys.ndim == 1:  # one query: usearch answers with flat Matches
            keys, distances = found.keys[np.newaxis], found.distances[np.newaxis]
            counts = [len(found.keys)]
        else:
            keys, distances, counts = found.keys, found.distances, found.counts
        return [[(int(k), 1.0 - float(d)) for k, d in zip(keys[i, :c], distances[i, :c],
                                                          strict=True)]
                for i, c in enumerate(counts)]


class SparseSegment:
    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self._index = tantivy.Index(_schema(), path=str(path), reuse=True)
        self._writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=1)

    def __len__(self) -> int:
        return self._index.searcher().num_docs

    def upsert(self, chunks: list[tuple[str, str]]) -> None:
        """(chunk id, text) pairs; call ``commit`` to make them searchable."""
        for chunk_id, text in chunks:
            self._writer.delete_documents_by_term("chunk_id", chunk_id)
            self._writer.add_document(tantivy.Document(chunk_id=chunk_id, text=text))

    def delete(self, chunk_ids: list[str]) -> None:
        for chunk_id in chunk_ids:
            self._writer.delete_documents_by_term("chunk_id", chunk_id)

    def commit(self) -> None:
        self._writer.commit()
        self._index.reload()

    def close(self) -> None:
        self._writer.wait_merging_threads()

    def search(self, query: str, n: int) -> list[tuple[str, float]]:
        """(chunk id, BM25 score), best first. Words only: query syntax is never interpreted."""
        words = _WORD.findall(query.lower())
        if not words:
            return []
        searcher = self._index.searcher()
        hits = searcher.search(self._index.parse_query(" ".join(words), ["text"]), n).hits
        return [(searcher.doc(address)["chunk_id"][0], score) for score, address in hits]


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    return builder.build()
