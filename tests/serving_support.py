"""What the serving tests share: a few one-chunk documents with metadata, written straight into
the deployment's store through the store interface (the pipeline tests go through the workers)."""

from __future__ import annotations

import hashlib

from ragstream.config import Settings
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import ChunkUpsert

DOCS = {
    "fish": "Zebrafish regenerate heart muscle after injury through cardiomyocyte division.",
    "plants": "The Calvin cycle fixes carbon dioxide with the enzyme rubisco in the stroma.",
    "climate": "Plants in hot, dry climates use the C4 and CAM pathways to limit water loss.",
    "stars": "Neutron stars are the collapsed cores of massive stars after a supernova.",
    "bones": "Vitamin D and calcium supplements are studied for the prevention of fractures.",
    "sleep": "Sleep deprivation impairs memory consolidation in the hippocampus of mice.",
}
QUERIES = ["how do zebrafish hearts heal", "carbon fixation by rubisco",
           "supernova remnants", "does vitamin D prevent fractures"]
TOP = ["fish", "plants", "stars", "bones"]  # each query's best document


BACKENDS = ("embedded", "pgvector", "qdrant")


def fill(settings: Settings, minilm, docs: dict[str, str], version: int = 1) -> None:
    """Write ``docs`` into the deployment's search store, one chunk each."""
    store = open_store(settings)
    try:
        store.ensure_schema(minilm.model_id, minilm.dimension)
        vectors = minilm.embed(list(docs.values()))
        store.apply([ChunkUpsert(f"{d}#0", d, version, 0, text,
                                 hashlib.sha256(text.encode()).hexdigest(), minilm.model_id, v,
                                 {"topic": "biology" if d != "stars" else "physics"})
                     for (d, text), v in zip(docs.items(), vectors, strict=True)])
    finally:
        store.close()
