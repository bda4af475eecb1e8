"""How ragstream's chunks become Qdrant points: the one mapping both Qdrant stores use.

Everything here is plain Python values (``PointSpec``, conditions, write steps); the embedded
store (qdrant-edge-py) and the server store (qdrant-client) each translate them into their own
client's types, so both write byte-for-byte the same points.

A collection holds three kinds of point, told apart by the payload field ``kind``:

- ``chunk``: one per chunk; id = uuid5(CHUNK_NAMESPACE, chunk id), so the same chunk is the same
  point in every process and every store. Named vectors ``dense`` (cosine, HNSW) and ``bm25``
  (sparse, with Qdrant's IDF modifier). Payload: chunk_id, doc_id, doc_version (the DOCUMENT's
  applied version, carried forward onto every chunk when the document's version rises, so a
  server can guard each point on its own), position, text, text_hash, model_id, vector_hash
  (sha256 of the float32 vector as written: Qdrant normalises cosine vectors, so the stored one
  cannot be compared), metadata, and metadata_terms (below).
- ``document``: one per document, no vectors; id = uuid5(DOCUMENT_NAMESPACE, doc id). Its
  doc_version is the highest version applied, kept after every chunk is gone, so an older event
  arriving after a delete is still refused.
- ``collection``: one point, no vectors: the model, dimension and sparse encoding the collection
  was made for (``ensure_schema`` compares them) and the generation token.

The BM25 sparse vector of a text:

- terms: tantivy's ``en_stem`` analysis, the same as the embedded index's keyword side (split on
  non-alphanumerics, drop terms over 40 bytes, lowercase, Snowball English stemmer);
- term id: crc32 of the term's UTF-8 bytes (stable across processes and versions; a collision
  of two terms only merges their counts);
- document weight: BM25's saturated term frequency, tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl /
  avgdl)), with k1 = 1.2, b = 0.75 and a fixed avgdl of 180 terms (a 240-token chunk of English
  text); query weight: 1 per distinct term. Qdrant's IDF modifier multiplies each term by its
  IDF over the collection at query time, so the dot product is BM25. This is how Qdrant's own
  BM25 works (fixed avgdl: a point is encoded once, when it is written); the parameters are part
  of ``SPARSE_ENCODING``, which ``ensure_schema`` refuses to mix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tantivy

from ragstream.vectorstores.base import (ChunkUpsert, Filter, MetadataValue, StoredChunk,
                                         canonical_metadata)

DENSE = "dense"
SPARSE = "bm25"
CHUNK, DOCUMENT, COLLECTION = "chunk", "document", "collection"
# bump when the payload layout changes: ensure_schema then refuses an older collection
SCHEMA_VERSION = 1

CHUNK_NAMESPACE = uuid.UUID("b27500fa-bd00-4002-8fb3-81d8525bc838")
DOCUMENT_NAMESPACE = uuid.UUID("18a0be91-c35f-43ea-8323-72f0a1edbbeb")
COLLECTION_POINT_ID = "8eb41164-4cec-459c-b3f9-dc974ddaa242"

BM25_K1, BM25_B, BM25_AVG_TERMS = 1.2, 0.75, 180.0
SPARSE_ENCODING = (f"tantivy-en_stem/crc32/bm25(k1={BM25_K1},b={BM25_B},"
                   f"avgdl={BM25_AVG_TERMS:g})")

# payload indexes: what the filters of the write guard and of search select on
KEYWORD_INDEXES = ("kind", "doc_id", "metadata_terms")
INTEGER_INDEXES = ("doc_version",)
# the payload fields ``same_chunk`` compares and a search hit shows
COMPARED = ["doc_id", "position", "text_hash", "model_id", "vector_hash", "metadata"]
SHOWN = ["chunk_id", "doc_id", "position", "text", "metadata"]

_ANALYZER = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
             .filter(tantivy.Filter.remove_long(40))
             .filter(tantivy.Filter.lowercase())
             .filter(tantivy.Filter.stemmer("english"))
             .build())


@functools.lru_cache(maxsize=1 << 16)
def point_id(chunk_id: str) -> str:
    # cached: the guard asks for a chunk's id to read it, then again to write it (a uuid5 is a
    # SHA-1, 3% of a guarded write)
    return str(uuid.uuid5(CHUNK_NAMESPACE, chunk_id))


def document_point_id(doc_id: str) -> str:
    return str(uuid.uuid5(DOCUMENT_NAMESPACE, doc_id))


# the sparse side ---------------------------------------------------------------------------------


def terms(text: str) -> list[str]:
    return _ANALYZER.analyze(text)


def term_id(term: str) -> int:
    return zlib.crc32(term.encode("utf-8"))


def document_sparse(text: str) -> tuple[list[int], list[float]]:
    """A chunk's BM25 term weights (IDF comes from the collection at query time)."""
    counts: Counter[int] = Counter()
    for term, n in Counter(terms(text)).items():  # hash each distinct term once
        counts[term_id(term)] += n
    length = sum(counts.values())
    norm = BM25_K1 * (1 - BM25_B + BM25_B * length / BM25_AVG_TERMS)
    ids = sorted(counts)
    return ids, [counts[i] * (BM25_K1 + 1) / (counts[i] + norm) for i in ids]


def query_sparse(text: str) -> tuple[list[int], list[float]]:
    ids = sorted({term_id(t) for t in terms(text)})
    return ids, [1.0] * len(ids)


# payload ----------------------------------------------------------------------------------------


def vector_hash(vector: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(vector, dtype=np.float32).tobytes()).hexdigest()


def metadata_term(key: str, value: MetadataValue) -> str:
    """One keyword per metadata pair, equal exactly when ``same_value`` says the values are:
    ``true`` is not ``1`` (JSON keeps them apart), ``1`` is ``1.0`` (an integral float is written
    as an integer). Qdrant's own match cannot do this: its integer match misses a stored 1.0, and
    qdrant-edge-py 0.9 turns a Python ``True`` into the integer 1 (tests/test_qdrant_store.py)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps([key, value], ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PointSpec:
    id: str
    payload: dict[str, Any]
    dense: list[float] | None = None
    sparse: tuple[list[int], list[float]] | None = None


def chunk_payload(op: ChunkUpsert, doc_version: int) -> dict[str, Any]:
    return {"kind": CHUNK, "chunk_id": op.chunk_id, "doc_id": op.doc_id,
            "doc_version": doc_version, "position": op.position, "text": op.text,
            "text_hash": op.text_hash, "model_id": op.model_id,
            "vector_hash": vector_hash(op.vector), "metadata": dict(op.metadata),
            "metadata_terms": [metadata_term(k, v) for k, v in op.metadata.items()]}


def chunk_point(op: ChunkUpsert, doc_version: int,
                payload: Mapping[str, Any] | None = None) -> PointSpec:
    """``payload``: the op's ``chunk_payload`` at any version, when the caller has it already
    (the guard's plan does: building it twice was a tenth of a Qdrant write)."""
    payload = (chunk_payload(op, doc_version) if payload is None
               else {**payload, "doc_version": doc_version})
    return PointSpec(point_id(op.chunk_id), payload,
                     np.asarray(op.vector, dtype=np.float32).tolist(), document_sparse(op.text))


def document_point(doc_id: str, doc_version: int) -> PointSpec:
    return PointSpec(document_point_id(doc_id),
                     {"kind": DOCUMENT, "doc_id": doc_id, "doc_version": doc_version})


def collection_point(model_id: str, dimension: int) -> PointSpec:
    return PointSpec(COLLECTION_POINT_ID, {
        "kind": COLLECTION, "model_id": model_id, "dimension": dimension,
        "sparse_encoding": SPARSE_ENCODING, "schema_version": SCHEMA_VERSION, "generation": "0"})


def same_chunk(stored: Mapping[str, Any], op: ChunkUpsert) -> bool:
    """What the embedded index's script compares: an upsert identical in these writes nothing."""
    return (stored.get("text_hash") == op.text_hash and stored.get("model_id") == op.model_id
            and stored.get("vector_hash") == vector_hash(op.vector)
            and stored.get("position") == op.position
            and canonical_metadata(stored.get("metadata") or {})
            == canonical_metadata(op.metadata))


def stored_chunk(payload: Mapping[str, Any]) -> StoredChunk:
    return StoredChunk(payload["chunk_id"], payload["doc_id"], payload["position"],
                       payload["text"], payload.get("metadata") or {})


def chunk_upsert(payload: Mapping[str, Any], dense: list[float]) -> ChunkUpsert:
    return ChunkUpsert(payload["chunk_id"], payload["doc_id"], payload["doc_version"],
                       payload["position"], payload["text"], payload["text_hash"],
                       payload["model_id"], np.asarray(dense, dtype=np.float32),
                       payload.get("metadata") or {})


# filters: every condition of a tuple must hold -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class MatchAny:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AtMost:
    key: str
    bound: int


@dataclass(frozen=True, slots=True)
class Below:
    key: str
    bound: int


@dataclass(frozen=True, slots=True)
class HasIds:
    ids: tuple[str, ...]


Condition = Match | MatchAny | AtMost | Below | HasIds
IS_CHUNK = (Match("kind", CHUNK),)


def search_conditions(where: Filter) -> tuple[Condition, ...]:
    """``Filter.admits`` as Qdrant conditions (a ``doc_ids`` of no documents admits nothing: the
    caller answers that without asking)."""
    out: list[Condition] = []
    if where.doc_ids is not None:
        out.append(MatchAny("doc_id", tuple(sorted(where.doc_ids))))
    out += [Match("metadata_terms", metadata_term(k, v)) for k, v in where.metadata.items()]
    return tuple(out)


# writes: what ``apply`` sends, in this order --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert these points; replace an existing one only where it meets ``only_if``."""

    points: tuple[PointSpec, ...]
    only_if: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    where: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class SetPayload:
    payload: dict[str, Any]
    where: tuple[Condition, ...]


Step = Upsert | Delete | SetPayload


@dataclass(slots=True)
class Plan:
    counts: list[int]
    steps: list[Step] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(self.counts)
