"""Worker modules. Each states what it consumes, writes and emits; the runtime does the rest.

Workers are imported lazily by name, so a process loads only the models its worker needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from ragstream.runtime import Worker

REGISTRY: dict[str, str] = {
    "echo": "workers.echo:EchoWorker",
    "noop": "workers.noop:NoopWorker",
    "entity_linking": "workers.entity_linking:EntityLinkingWorker",
    "embedding": "workers.embedding:EmbeddingWorker",
    "reindex": "workers.reindex:ReindexWorker",  # the embedded index
    "reindex_pgvector": "workers.reindex:PgvectorReindexWorker",
    "reindex_qdrant": "workers.reindex:QdrantReindexWorker",
    "gcn_refresh": "workers.gcn_refresh:GcnRefreshWorker",
    "batch_inference": "workers.batch_inference:BatchInferenceWorker",  # needs Triton
}

# The workers `ragstream up` starts by default ("reindex": one per store kept fresh, see
# default_stack).
DEFAULT_STACK: tuple[str, ...] = ("echo", "entity_linking", "embedding", "reindex",
                                  "gcn_refresh")


def reindex_worker(store: str) -> str:
    """The reindex worker, and so the consumer group, that keeps ``store`` fresh."""
    return "reindex" if store == "embedded" else f"reindex_{store}"


def default_stack(stores: Sequence[str]) -> list[str]:
    """DEFAULT_STACK with a reindex worker for each of ``stores`` (settings.store.fresh_stores):
    each store has its own consumer group, so a slow or down store never holds back another."""
    out: list[str] = []
    for name in DEFAULT_STACK:
        out += [reindex_worker(s) for s in stores] if name == "reindex" else [name]
    return out


def load(name: str) -> type[Worker]:
    try:
        module, _, attr = REGISTRY[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown worker {name!r}; known: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), attr)


def consumer_groups(names: list[str], group_id: Callable[[str], str]) -> dict[str, tuple[str, ...]]:
    """Each named worker's consumer group and the topics it reads."""
    return {group_id(name): load(name).consumes for name in names}
