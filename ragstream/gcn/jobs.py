"""Run a refresh job against the configured stores: the one entry point for the Celery tasks,
the CLI and the worker's trigger. It holds the graph's refresh lock, drains the dirty set and
announces each new version on graph.embeddings.v1."""

from __future__ import annotations

import logging
from typing import Literal

from ragstream.config import GcnSettings, KgSettings, Settings
from ragstream.gcn.dirty import DirtySet
from ragstream.locks import renewed_lock
from ragstream.publisher import Publisher
from ragstream.gcn.refresh import Announce, Refresher, RefreshReport
from ragstream.gcn.store import EmbeddingStore
from ragstream.graph import open_graph_store
from ragstream.stores.keys import GraphKeys
from ragstream.stores.redis import connect, connect_sync
from schemas.catalogue import GRAPH_EMBEDDINGS_UPDATED
from schemas.envelope import Envelope, derived_event_id
from schemas.payloads import GraphEmbeddingsUpdated

log = logging.getLogger(__name__)

Mode = Literal["incremental", "full", "retrain"]


async def run_job(mode: Mode, settings: Settings | None = None, cfg: GcnSettings | None = None,
                  kg: KgSettings | None = None, *, announce: bool = True) -> RefreshReport:
    settings = settings or Settings()
    cfg, kg = cfg or settings.gcn, kg or settings.kg
    graph_name = kg.graph_name(settings)
    graph_store = await open_graph_store(settings, kg)
    lock_client = connect_sync(settings)
    dirty = DirtySet(connect(settings), graph_name)
    try:
        with renewed_lock(lock_client, GraphKeys(graph_name).gcn_lock, cfg.lock_ttl_s,
                          cfg.lock_wait_s):
            refresher = Refresher(
                EmbeddingStore(graph_store.backend, write_batch=cfg.write_batch,
                               read_batch=cfg.read_batch),
                settings.data_dir / "gcn" / graph_name, cfg,
                kafka_announcer(settings, graph_name, cfg.ids_per_event) if announce else None)
            members = await dirty.members()
            report = await getattr(refresher, mode)(members)
            await dirty.remove(members - set(report.deferred))
    finally:
        await graph_store.close()
        await dirty.client.aclose()
        lock_client.close()
    log.info("gcn refresh done", extra=report.summary())
    return report


def announcements(graph_name: str, version: int, model: str, dimension: int, ids: list[str],
                  full: bool, ids_per_event: int) -> list[Envelope]:
    """graph.embeddings.v1 events for one version: a full refresh is one event (every node);
    an incremental one lists the rewritten nodes, split to stay under the event size limit.
    Ids derive from the version, so a resumed job re-announces with the same ids."""
    chunks = [[]] if full else [ids[i:i + ids_per_event] for i in range(0, len(ids), ids_per_event)]
    return [Envelope(
        id=derived_event_id("gcn", graph_name, version, n), type=GRAPH_EMBEDDINGS_UPDATED,
        source="ragstream/gcn_refresh", subject=graph_name,
        data=GraphEmbeddingsUpdated(embedding_version=str(version), model_version=model,
                                    node_ids=chunk, dimension=dimension,
                                    full_refresh=full).model_dump(mode="json"))
        for n, chunk in enumerate(chunks)]


def kafka_announcer(settings: Settings, graph_name: str, ids_per_event: int) -> Announce:
    async def announce(version: int, model: str, dimension: int, ids: list[str],
                       full: bool) -> None:
        async with Publisher(settings) as publisher:
            await publisher.publish(announcements(graph_name, version, model, dimension, ids,
                                                  full, ids_per_event))

    return announce
