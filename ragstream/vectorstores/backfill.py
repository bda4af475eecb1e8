"""Fill a new store from one that is already current: ``ragstream reindex --to STORE``.

It pages through the source store in chunk id order and applies each page to the target as
upserts at the document's applied version. The last chunk id copied is kept in Redis after each
page, so an interrupted backfill resumes where it stopped (``--restart`` starts over).

It can run while the target's own reindex worker consumes chunks.embedded.v1: every write is
version-guarded, so a page read before a newer change never overwrites it, and a document
deleted meanwhile stays deleted (the target refuses the older upsert). Start the target's worker
first (add the store to ``RAGSTREAM_STORE_FRESH``), then backfill: what the worker has not seen
comes from the backfill, what changes after comes from the worker.

A document the target holds at a newer version than the source (the source's worker lagging)
keeps the target's chunks, and its chunks that changed before are refused until the source has
caught up: run the backfill again then (a complete one changes nothing) and compare the stores'
digests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragstream.config import Settings
from ragstream.stores.redis import connect_sync
from ragstream.vectorstores import open_store

PAGE = 500


@dataclass
class Progress:
    copied: int  # chunks applied to the target in this run
    changed: int  # of which the target did not already hold
    total: int  # chunks in the source
    last: str | None  # the last chunk id copied


def backfill(settings: Settings, source_name: str, target_name: str, *, restart: bool = False,
             page: int = PAGE, progress: Callable[[Progress], None] = lambda p: None) -> Progress:
    if source_name == target_name:
        raise ValueError("the source and the target are the same store")
    redis = connect_sync(settings)
    cursor_key = settings.keys.store_backfill(target_name)
    source = open_store(settings, source_name)
    target = open_store(settings, target_name)
    try:
        if restart:
            redis.delete(cursor_key)
        raw = redis.get(cursor_key)
        done = Progress(0, 0, source.counts().chunks, raw.decode() if raw else None)
        while chunks := source.scan(done.last, page):
            # the target is checked against the source's vectors on the first page only: a
            # mismatch is a wiring error, not something a later page can fix
            if done.copied == 0:
                target.ensure_schema(chunks[0].model_id, len(chunks[0].vector))
            done.changed += sum(target.apply(chunks))
            done.copied += len(chunks)
            done.last = chunks[-1].chunk_id
            redis.set(cursor_key, done.last)
            progress(done)
        redis.delete(cursor_key)  # complete: a later run starts over
        return done
    finally:
        source.close()
        target.close()
        redis.close()
