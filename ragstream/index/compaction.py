"""Compaction: rebuild the index from the chunk store as a new snapshot version, swap it in,
and trim the change log.

A rebuild drops what incremental updates leave behind (removed HNSW nodes, deleted BM25
documents) and gives readers a recent starting point, so a restart loads a snapshot and
replays only the log since then. It runs while the index is being written: the watermark is
read before the chunks, so a change made during the scan is both in the scan and in the log
after the watermark, and replaying it on top is a no-op.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import redis

from ragstream.config import Settings
from ragstream.index import snapshots
from ragstream.index.store import parse_chunk
from ragstream.stores.keys import Keys
from ragstream.stores.redis import connect_sync

log = logging.getLogger(__name__)

_SCAN_PAGE = 500


def compact(settings: Settings) -> dict:
    """Build and publish the next snapshot version; returns its manifest as a dict."""
    keys = settings.keys
    root = snapshots.index_dir(settings.data_dir)
    client = connect_sync(settings, socket_timeout=30)
    try:
        started = time.monotonic()
        newest = client.xrevrange(keys.index_log, count=1)
        watermark = newest[0][0].decode() if newest else "0-0"
        previous = snapshots.current(root)
        manifest = snapshots.write(root, watermark, _all_chunks(client, keys), time.time())
        if previous is not None:
            # readers of the previous version still catch up from its watermark; older is unused
            client.xtrim(keys.index_log, minid=previous.watermark)
            client.set(keys.index_log_floor, previous.watermark)
        log.info("index compacted", extra={"version": manifest.version, "chunks": manifest.chunks,
                                           "seconds": round(time.monotonic() - started, 2)})
        return asdict(manifest)
    finally:
        client.close()


def _all_chunks(client: redis.Redis, keys: Keys):
    prefix = len(keys.index_chunk_prefix)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{keys.index_chunk_prefix}*", count=_SCAN_PAGE):
        batch.append(key)
        if len(batch) == _SCAN_PAGE:
            yield from _read(client, batch, prefix)
            batch = []
    yield from _read(client, batch, prefix)


def _read(client: redis.Redis, keys: list[bytes], prefix: int):
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    for key, fields in zip(keys, pipe.execute(), strict=True):
        if fields:  # deleted between the scan and the read
            yield parse_chunk(key.decode()[prefix:], fields)
