"""A reader's copy of the hybrid index: the newest snapshot plus the change log's tail.

Any process that answers queries holds one. Before each query it reads the log entries written
since its last look (one Redis round trip) and applies them, so a change is searchable as soon
as the reindex worker has written it. When a compaction publishes a new snapshot, the replica
loads it and catches it up before swapping it in whole: a query sees the old index or the new
one, never a mix, and never a half-built one.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragstream.config import Settings
from ragstream.index import snapshots
from ragstream.index.segments import DenseSegment, SparseSegment, chunk_key
from ragstream.index.store import Change, ChunkRecord, format_id, parse_change, stream_id
from ragstream.stores.redis import connect_sync

log = logging.getLogger(__name__)

_LOG_PAGE = 5_000
# A replica touches its working copy this often while it is open; a copy another host has not
# touched for STALE_S is left by a reader that died there (its pid means nothing on this host).
HEARTBEAT_S = 60.0
STALE_S = 15 * 60.0


@dataclass
class IndexState:
    """One consistent index: a snapshot version with the log applied up to ``position``."""

    version: int
    position: tuple[int, int]
    dense: DenseSegment
    sparse: SparseSegment
    workdir: Path
    chunks: dict[str, ChunkRecord] = field(default_factory=dict)
    by_key: dict[int, str] = field(default_factory=dict)

    def apply(self, changes: list[Change]) -> None:
        latest = {c.chunk_id: c for c in changes}  # a chunk's last change wins
        upserts = [c for c in latest.values() if c.record is not None]
        deletes = [c.chunk_id for c in latest.values() if c.record is None]
        self.dense.delete(deletes)
        self.sparse.delete(deletes)
        if upserts:
            self.dense.upsert([c.chunk_id for c in upserts], np.stack([c.vector for c in upserts]))
            self.sparse.upsert([(c.chunk_id, c.record.text) for c in upserts])
        self.sparse.commit()
        for chunk_id in deletes:
            self.chunks.pop(chunk_id, None)
            self.by_key.pop(chunk_key(chunk_id), None)
        for c in upserts:
            self.chunks[c.chunk_id] = c.record
            self.by_key[chunk_key(c.chunk_id)] = c.chunk_id

    def close(self) -> None:
        self.sparse.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class IndexReplica:
    def __init__(self, settings: Settings):
        self.root = snapshots.index_dir(settings.data_dir)
        self._keys = settings.keys
        self._redis = connect_sync(settings)
        self._lock = threading.RLock()
        self._state: IndexState | None = None
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._touch_while_open, daemon=True,
                                           name="index replica heartbeat")
        self._heartbeat.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._state is not None:
                self._state.close()
                self._state = None
            self._redis.close()

    def _touch_while_open(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            state = self._state
            if state is not None:
                try:
                    os.utime(state.workdir)
                except FileNotFoundError:  # swapped for a newer copy meanwhile
                    pass

    def refresh(self) -> IndexState:
        """The index as of now. Call it under ``lock`` and use the state while holding it."""
        with self._lock:
            live = snapshots.current(self.root)
            floor = self._redis.get(self._keys.index_log_floor)
            state = self._state
            stale = state is None or (live is not None and live.version != state.version)
            if state is not None and floor is not None and state.position < stream_id(floor):
                stale = True  # entries this replica still needs were trimmed
            if stale:
                fresh = self._load_live(live)
                self._catch_up(fresh)
                self._state, old = fresh, state
                if old is not None:
                    old.close()
            else:
                self._catch_up(state)
            return self._state

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def _catch_up(self, state: IndexState) -> None:
        while True:
            entries = self._redis.xrange(self._keys.index_log, min=f"({format_id(state.position)}",
                                         count=_LOG_PAGE)
            if not entries:
                return
            state.apply([parse_change(fields) for _, fields in entries])
            state.position = stream_id(entries[-1][0])
            if len(entries) < _LOG_PAGE:
                return

    def _load_live(self, manifest: snapshots.Manifest | None) -> IndexState:
        try:
            return self._load(manifest)
        except FileNotFoundError:  # a newer compaction removed it meanwhile: take the newest
            return self._load(snapshots.current(self.root))

    def _load(self, manifest: snapshots.Manifest | None) -> IndexState:
        workdir = self._new_workdir()
        try:
            return self._load_into(manifest, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _load_into(self, manifest: snapshots.Manifest | None, workdir: Path) -> IndexState:
        if manifest is None:
            return IndexState(0, (0, 0), DenseSegment(), SparseSegment(workdir / "sparse"),
                              workdir)
        # the snapshot stays read-only: this replica updates its own copy of the sparse index
        shutil.copytree(snapshots.sparse_path(self.root, manifest), workdir / "sparse",
                        ignore=shutil.ignore_patterns("*.lock"))
        dense_file = snapshots.dense_path(self.root, manifest)
        dense = DenseSegment.load(dense_file) if dense_file.exists() else DenseSegment()
        state = IndexState(manifest.version, stream_id(manifest.watermark), dense,
                           SparseSegment(workdir / "sparse"), workdir)
        for record in snapshots.read_chunks(self.root, manifest):
            state.chunks[record.chunk_id] = record
            state.by_key[chunk_key(record.chunk_id)] = record.chunk_id
        log.info("index snapshot loaded", extra={"version": manifest.version,
                                                 "chunks": manifest.chunks})
        return state

    def _new_workdir(self) -> Path:
        replicas = self.root / "replicas"
        replicas.mkdir(parents=True, exist_ok=True)
        host = _host()
        for stale in replicas.iterdir():  # copies left by readers that were killed
            pid, *rest = stale.name.split("-")
            if "-".join(rest[:-1]) in ("", host):
                dead = pid.isdigit() and not _pid_alive(int(pid))
            else:
                # a shared volume (several gateway pods) holds other hosts' copies: their pids
                # mean nothing here, but a live replica touches its copy every HEARTBEAT_S
                dead = _untouched_for(stale) > STALE_S
            if dead:
                shutil.rmtree(stale, ignore_errors=True)
        workdir = replicas / f"{os.getpid()}-{host}-{uuid.uuid4().hex[:8]}"
        workdir.mkdir()
        return workdir


def _untouched_for(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
