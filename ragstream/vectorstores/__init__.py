"""Vector stores that ragstream keeps fresh and searches, behind one interface (``base``).

- ``embedded``: Redis + a usearch/tantivy replica per reader; the default, nothing to run;
- ``pgvector``: PostgreSQL with pgvector, a table per deployment, HNSW + full-text ranking;
- ``qdrant``: Qdrant, embedded in process (qdrant-edge-py) or a server (qdrant-client).

Each backend module imports its client library only when it is opened, so a deployment that
uses one store needs no other store's library.
"""

from __future__ import annotations

from ragstream.config import STORE_BACKENDS, Settings
from ragstream.vectorstores.base import ChunkStore


def open_store(settings: Settings, name: str | None = None) -> ChunkStore:
    """The store ``name`` (default: the one search reads) of this deployment."""
    name = name or settings.store.search
    if name == "embedded":
        from ragstream.vectorstores.embedded import EmbeddedStore
        return EmbeddedStore(settings)
    if name == "pgvector":
        from ragstream.vectorstores.pgvector import PgvectorStore
        return PgvectorStore(settings)
    if name == "qdrant":
        from ragstream.vectorstores.qdrant import open_qdrant
        return open_qdrant(settings)
    raise ValueError(f"unknown store {name!r}; known: {list(STORE_BACKENDS)}")
