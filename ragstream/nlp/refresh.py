"""The gazetteer refresh: embed the entities that have no embedding yet, then publish a new
gazetteer version, which the entity-linking workers pick up between batches. Idempotent; beat
fires it (entry "kg-gazetteer-refresh" in ragstream/schedule.py) as one exclusive task."""

from __future__ import annotations

import asyncio

from ragstream.celery_app import exclusive_task
from ragstream.config import Settings
from ragstream.embedders import Embedder, load_embedder
from ragstream.graph import GraphStore, open_graph_store

TASK_NAME = "ragstream.kg.refresh_gazetteer"


async def refresh_gazetteer(store: GraphStore, embedder: Embedder, batch: int) -> dict[str, int]:
    """Embed "name: context" of every entity lacking an embedding; bump the gazetteer version."""
    embedded = 0
    while todo := await store.entities_without_embedding(batch):
        vectors = await asyncio.to_thread(
            embedder.embed, [f"{name}: {context}" for _, name, context in todo])
        await store.set_embeddings({id_: v.tolist() for (id_, _, _), v in zip(todo, vectors)})
        embedded += len(todo)
    return {"embedded": embedded, "version": await store.bump_gazetteer_version()}


async def _refresh(settings: Settings) -> dict[str, int]:
    store = await open_graph_store(settings)
    try:
        # the deployment's embedder (RAGSTREAM_EMBEDDER), as entity linking compares against it
        return await refresh_gazetteer(store, load_embedder(settings), settings.kg.embed_batch)
    finally:
        await store.close()


@exclusive_task(TASK_NAME)
def refresh_gazetteer_task(settings: Settings) -> dict[str, int]:
    return asyncio.run(_refresh(settings))
