"""The store interface: what the reindex worker writes through and what search reads through.

A backend keeps, per deployment namespace, the current chunks of every document (text, vector,
metadata) and each document's highest applied version. Every backend gives the same guarantees,
checked by one conformance suite (tests/test_store_conformance.py):

- ``apply`` takes a batch of chunk upserts and document deletes. Per document it is atomic,
  idempotent (a replay changes nothing and reports 0) and version-guarded: an operation older
  than the document's applied version is ignored, so an older version never overwrites a newer.
- An upsert at the applied version or newer writes the chunk unless the stored one is identical
  (same text hash, model, vector, position and metadata). A delete at the applied version or
  newer removes the listed chunks, or every chunk of the document with ``all_chunks``.
- ``candidates`` gives the dense (cosine) and keyword rankings for one query, with the records
  of every chunk in them, read from one consistent state. Fusion (weighted RRF) happens above
  the store (ragstream.vectorstores.search), so every backend's hybrid order is computed alike.
- ``digest`` and ``counts`` describe the content, for the chaos comparison and for a migration:
  two stores that applied the same events give the same digest.
- ``scan`` pages through every chunk with its vector, to backfill another store.
- ``generation`` changes whenever ``apply`` changed anything, so a cache keyed by it is never
  staler than the store.

Methods are synchronous: the reindex worker calls ``apply`` in a thread and the gateway calls
``candidates`` in a thread, so a backend may use a blocking client. An unreachable store raises
``StoreUnavailable``; the worker runtime then backs off and retries the whole batch, which the
guarantees above make safe.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragstream.errors import SinkUnavailable, WiringError

MetadataValue = str | int | float | bool | None


class StoreUnavailable(SinkUnavailable):
    """The store cannot be reached or refused the write for a transient reason."""


class StoreMismatch(WiringError):
    """The store holds vectors of another model or dimension than this deployment writes."""


@dataclass(frozen=True, slots=True)
class ChunkUpsert:
    chunk_id: str
    doc_id: str
    doc_version: int
    position: int
    text: str
    text_hash: str
    model_id: str
    vector: np.ndarray
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DocumentDelete:
    doc_id: str
    doc_version: int
    chunk_ids: Sequence[str] = ()
    all_chunks: bool = False


Operation = ChunkUpsert | DocumentDelete


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What a search hit shows of a chunk."""

    chunk_id: str
    doc_id: str
    position: int
    text: str
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Filter:
    """Restricts a search: to these documents (if given), and to chunks whose metadata has each
    of these key/value pairs (equality; every pair must match)."""

    doc_ids: frozenset[str] | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.doc_ids is None and not self.metadata

    def admits(self, chunk: StoredChunk) -> bool:
        if self.doc_ids is not None and chunk.doc_id not in self.doc_ids:
            return False
        return all(key in chunk.metadata and same_value(chunk.metadata[key], value)
                   for key, value in self.metadata.items())


NO_FILTER = Filter()


@dataclass(frozen=True, slots=True)
class Candidates:
    """Chunk ids best first per ranking, and the records of every chunk named in either."""

    dense: list[str]
    sparse: list[str]
    chunks: dict[str, StoredChunk]


# one read of ``candidates``: (vector, query, n, where)
Search = tuple[np.ndarray | None, str | None, int, Filter]


@dataclass(frozen=True, slots=True)
class Counts:
    documents: int  # documents with at least one chunk
    chunks: int


class ChunkStore(ABC):
    """One backend. Construct it with ``ragstream.vectorstores.open_store``."""

    name: str

    @abstractmethod
    def ensure_schema(self, model_id: str, dimension: int) -> None:
        """Create the namespace's tables or collection, or check the existing ones; raise
        ``StoreMismatch`` when they hold another model's or dimension's vectors."""

    @abstractmethod
    def apply(self, operations: Sequence[Operation]) -> list[int]:
        """Apply in order; per operation, the number of chunks it changed (0: a replay or an
        outdated version)."""

    @abstractmethod
    def candidates(self, vector: np.ndarray | None, query: str | None, n: int,
                   where: Filter = NO_FILTER) -> Candidates:
        """Up to ``n`` chunks by cosine similarity to ``vector`` and up to ``n`` by keyword rank
        for ``query`` (either may be None: that ranking is empty), all admitted by ``where``."""

    # True where ``candidates_many`` answers a batch in one go (one consistent state, batched
    # native searches); otherwise the searcher runs ``candidates`` concurrently on its threads
    batched_reads: bool = False

    def candidates_many(self, searches: Sequence[Search]) -> list[Candidates]:
        """``candidates`` for each (vector, query, n, where), in order."""
        return [self.candidates(*search) for search in searches]

    @abstractmethod
    def counts(self) -> Counts: ...

    @abstractmethod
    def scan(self, after: str | None, limit: int) -> list[ChunkUpsert]:
        """Up to ``limit`` stored chunks with ids greater than ``after``, in chunk id order, each
        with its document's applied version."""

    @abstractmethod
    def generation(self) -> str:
        """A token that differs after every ``apply`` that changed a chunk (and only then, ideally:
        a cache keyed by it misses after each change)."""

    @abstractmethod
    def drop(self) -> None:
        """Remove this namespace's data, tables or collection from the store (after a migration,
        or between tests). The store may not be used after."""

    def digest(self) -> str:
        """sha256 over every stored chunk's id, document, position, text hash, model and
        metadata, in chunk id order (vectors are left out: a store may normalise them)."""
        h = hashlib.sha256()
        after = None
        while page := self.scan(after, 1_000):
            for c in page:
                h.update(digest_line(c))
            after = page[-1].chunk_id
        return h.hexdigest()

    def close(self) -> None:
        """Release connections; the store may not be used after."""


def digest_line(c: ChunkUpsert) -> bytes:
    return json.dumps([c.chunk_id, c.doc_id, c.position, c.text_hash, c.model_id,
                       canonical_metadata(c.metadata)], ensure_ascii=False).encode() + b"\n"


def canonical_metadata(metadata: Mapping[str, MetadataValue]) -> str:
    """One text per metadata mapping, for comparing and storing it."""
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def same_value(stored: Any, wanted: MetadataValue) -> bool:
    """Metadata equality as JSON sees it: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    return stored == wanted

