"""Qdrant as a ragstream store: embedded in process (qdrant-edge-py) or a server (qdrant-client).

- ``mapping``: chunks to points, the BM25 sparse encoding and the filters, shared by both;
- ``guard``: the per-document version guard, a batch in and its writes out;
- ``store``: the ChunkStore methods over a few engine primitives;
- ``edge``: the engine embedded in this process, on ``<data_dir>/qdrant/<collection>``;
- ``server``: a Qdrant server at ``RAGSTREAM_STORE_QDRANT_URL``.

docs/stores-qdrant.md says what each guarantees and how it is tested.
"""

from __future__ import annotations

from ragstream.config import Settings
from ragstream.vectorstores.qdrant.store import QdrantStore


def open_qdrant(settings: Settings) -> QdrantStore:
    """The server store when ``RAGSTREAM_STORE_QDRANT_URL`` is set, else the embedded one. Each
    imports its own client library only here."""
    if settings.store.qdrant_url:
        from ragstream.vectorstores.qdrant.server import QdrantServerStore
        return QdrantServerStore(settings)
    from ragstream.vectorstores.qdrant.edge import QdrantEdgeStore
    return QdrantEdgeStore(settings)
