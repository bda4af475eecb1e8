"""Qdrant embedded in this process (qdrant-edge-py): the real Qdrant engine on a local directory,
for local runs, tests and benchmarks; nothing to run beside ragstream.

One shard directory per collection, ``<data_dir>/qdrant/<collection>``, and ONE process per
directory: the engine holds its write-ahead log locked (a second process fails to load it with
"Can't init WAL: WouldBlock"), and this store takes ``<collection>.lock`` beside it first, so the
second process fails with ``QdrantShardInUse`` naming the owner's pid instead. In a local run the
process that runs the ``reindex_qdrant`` worker owns it; search it from that process, or run a
Qdrant server (RAGSTREAM_STORE_QDRANT_URL) when several processes must share one collection.

Inside the process every store of a directory shares one open shard. One lock serializes
``apply`` against every read, so a search never sees half a batch. The engine has no background
optimizer: new points are searched by brute force until ``optimize()`` builds their HNSW graph
and vacuums deleted points, so a thread of this store has it done after every
``RAGSTREAM_STORE_QDRANT_OPTIMIZE_EVERY`` written points, in a child process (``_Shard.optimize``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import qdrant_edge as q

from ragstream.config import Settings
from ragstream.errors import WiringError
from ragstream.vectorstores.qdrant.mapping import (COLLECTION_POINT_ID, DENSE, INTEGER_INDEXES,
                                                   KEYWORD_INDEXES, SHOWN, SPARSE, AtMost, Below,
                                                   Condition, Delete, HasIds, Match, MatchAny,
                                                   Plan, PointSpec, SetPayload, Step, Upsert,
                                                   collection_point)
from ragstream.vectorstores.qdrant.store import Payload, QdrantStore, Sparse

log = logging.getLogger(__name__)


class QdrantShardInUse(WiringError):
    """Another process holds this Qdrant Edge shard directory open."""


# translation of the mapping's plain values into qdrant-edge-py's types ------------------------


def edge_point(spec: PointSpec) -> q.Point:
    vectors: dict[str, Any] = {}
    if spec.dense is not None:
        vectors[DENSE] = spec.dense
    if spec.sparse is not None:
        vectors[SPARSE] = q.SparseVector(*spec.sparse)
    return q.Point(spec.id, vectors, spec.payload)


def edge_filter(conditions: tuple[Condition, ...]) -> q.Filter | None:
    return q.Filter(must=[_edge_condition(c) for c in conditions]) if conditions else None


def _edge_condition(c: Condition):
    if isinstance(c, Match):
        return q.FieldCondition(c.key, match=q.MatchValue(c.value))
    if isinstance(c, MatchAny):
        return q.FieldCondition(c.key, match=q.MatchAny(list(c.values)))
    if isinstance(c, AtMost):
        return q.FieldCondition(c.key, range=q.RangeFloat(lte=c.bound))
    if isinstance(c, Below):
        return q.FieldCondition(c.key, range=q.RangeFloat(lt=c.bound))
    assert isinstance(c, HasIds)
    return q.HasIdCondition(set(c.ids))


def edge_update(step: Step) -> q.UpdateOperation:
    if isinstance(step, Upsert):
        return q.UpdateOperation.upsert_points([edge_point(p) for p in step.points],
                                               condition=edge_filter(step.only_if))
    if isinstance(step, Delete):
        return q.UpdateOperation.delete_points_by_filter(edge_filter(step.where))
    assert isinstance(step, SetPayload)
    return q.UpdateOperation.set_payload_by_filter(edge_filter(step.where), step.payload)


def _config(dimension: int) -> q.EdgeConfig:
    return q.EdgeConfig(vectors={DENSE: q.EdgeVectorParams(size=dimension,
                                                           distance=q.Distance.Cosine)},
                        sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)})


# one open shard per directory and process ------------------------------------------------------


class _Shard:
    def __init__(self, path: Path, optimize_every: int):
        self.path = path
        self.lock = threading.RLock()
        self.users = 0
        self.engine: q.EdgeShard | None = None
        self.optimize_every = optimize_every
        self.unoptimized = 0
        self._wake = threading.Event()
        self._stopping = False
        self._optimizer: threading.Thread | None = None
        self._lockfile = _lock_directory(path)
        if (path / "edge_config.json").exists():
            try:
                self.engine = q.EdgeShard.load(str(path))
            except BaseException:
                self._lockfile.close()
                raise

    def written(self, points: int) -> None:
        """Count written points; past ``optimize_every``, wake the optimizer thread."""
        self.unoptimized += points
        if self.unoptimized >= self.optimize_every:
            self.unoptimized = 0
            if self._optimizer is None:
                self._optimizer = threading.Thread(target=self._optimize_loop, daemon=True,
                                                   name=f"qdrant-optimize-{self.path.name}")
                self._optimizer.start()
            self._wake.set()

    def _optimize_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                started = time.monotonic()
                self.optimize()
                log.info("optimized %s in %.1f s", self.path, time.monotonic() - started)
            except Exception:  # the shard stays searchable (brute force); try again next time
                log.exception("optimizing %s failed", self.path)

    def optimize(self) -> bool:
        """Build the HNSW graph of the points written so far and vacuum deleted ones, in a child
        process; True if anything was optimized.

        qdrant-edge-py 0.9 holds the GIL for the whole of ``optimize()``: run here, it stopped
        every thread of the process, the worker's event loop and its Kafka heartbeats included,
        for 2.4 s at 10k points, longer as the shard grows. The engine allows one process per
        directory, so the shard is closed while the child works: this shard's reads and writes
        wait on its lock, and the rest of the process goes on."""
        with self.lock:
            if self.engine is None:
                return False
            self.engine.flush()
            self.engine.close()
            self.engine = None
            try:
                child = subprocess.run(
                    [sys.executable, "-c", _OPTIMIZE, str(self.path), str(os.getpid())],
                    capture_output=True, text=True)
            finally:
                self.engine = q.EdgeShard.load(str(self.path))
        if child.returncode != 0:
            raise RuntimeError(f"optimizing {self.path} exited {child.returncode}: "
                               f"{child.stderr.strip()[-2000:]}")
        return child.stdout.strip() == "True"

    def close(self, remove: bool = False) -> None:
        self._stopping = True
        self._wake.set()
        if self._optimizer is not None:
            self._optimizer.join()
        with self.lock:
            if self.engine is not None:
                self.engine.flush()
                self.engine.close()
                self.engine = None
            if remove:
                shutil.rmtree(self.path, ignore_errors=True)
                self.path.with_suffix(".lock").unlink(missing_ok=True)
            self._lockfile.close()  # releases the flock


# The child dies with its parent (PR_SET_PDEATHSIG): an orphan would hold the shard's write-ahead
# log, and the restarted worker could not load it. A shard whose optimizer was killed half-way
# reads as before (SIGKILL at 0.8, 1.5 and 2.5 s of a 10k-point optimize: the same digest).
_OPTIMIZE = ("import ctypes, os, signal, sys, qdrant_edge\n"
             "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
             "if os.getppid() != int(sys.argv[2]): sys.exit('the parent is gone')\n"
             "shard = qdrant_edge.EdgeShard.load(sys.argv[1])\n"
             "print(shard.optimize())\n"
             "shard.close()\n")


def _lock_directory(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lockfile = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held while the shard is)
    try:
        fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lockfile.seek(0)
        owner = lockfile.read().strip() or "unknown"
        lockfile.close()
        raise QdrantShardInUse(
            f"the Qdrant Edge shard {path} is open in process {owner}: the embedded engine "
            f"allows one process per shard directory. Search through that process, stop it, or "
            f"run a Qdrant server (RAGSTREAM_STORE_QDRANT_URL) for several processes") from None
    lockfile.seek(0)
    lockfile.truncate()
    lockfile.write(f"{os.getpid()}\n")
    lockfile.flush()
    return lockfile


_open: dict[Path, _Shard] = {}
_open_lock = threading.Lock()


def _acquire(path: Path, optimize_every: int) -> _Shard:
    with _open_lock:
        shard = _open.get(path)
        if shard is None:
            shard = _open[path] = _Shard(path, optimize_every)
        shard.users += 1
        return shard


def _release(shard: _Shard, remove: bool = False) -> None:
    with _open_lock:
        shard.users -= 1
        if shard.users > 0 and not remove:
            return
        _open.pop(shard.path, None)
    shard.close(remove)


# the store ---------------------------------------------------------------------------------------


class QdrantEdgeStore(QdrantStore):
    def __init__(self, settings: Settings):
        collection = settings.store.name_in(settings, "qdrant")
        path = (Path(settings.data_dir) / "qdrant" / collection).resolve()
        self.where = f"shard {path}"
        self._shard: _Shard | None = _acquire(path, settings.store.qdrant_optimize_every)

    def __repr__(self) -> str:
        return f"QdrantEdgeStore({self.where!r})"

    @property
    def shard(self) -> _Shard:
        if self._shard is None:
            raise WiringError(f"{self!r} is closed")
        return self._shard

    def close(self) -> None:
        if self._shard is not None:
            _release(self._shard)
            self._shard = None

    def drop(self) -> None:
        if self._shard is not None:
            _release(self._shard, remove=True)
            self._shard = None

    def optimize(self) -> bool:
        """Build the HNSW graph of every point written so far and vacuum deleted ones, now
        (the store also does it by itself in the background; see the module docstring)."""
        return self.shard.optimize()

    def ensure_schema(self, model_id: str, dimension: int) -> None:
        shard = self.shard
        with shard.lock:
            if shard.engine is None:
                shard.engine = q.EdgeShard.create(str(shard.path), _config(dimension))
                for name in KEYWORD_INDEXES:
                    shard.engine.update(q.UpdateOperation.create_field_index(
                        name, q.PayloadSchemaType.Keyword))
                for name in INTEGER_INDEXES:
                    shard.engine.update(q.UpdateOperation.create_field_index(
                        name, q.PayloadSchemaType.Integer))
            engine = shard.engine
            found = self._retrieve([COLLECTION_POINT_ID], None)
            if not found and engine.count(q.CountRequest()) == 0:
                # new, or a creation cut short before its collection point was written
                engine.update(q.UpdateOperation.upsert_points(
                    [edge_point(collection_point(model_id, dimension))]))
                found = self._retrieve([COLLECTION_POINT_ID], None)
            config = json.loads((shard.path / "edge_config.json").read_text())
            size = config.get("vectors", {}).get(DENSE, {}).get("size")
            self._check_collection(found[0][0] if found else None, size, model_id, dimension)

    # engine primitives -------------------------------------------------------------------------

    def _writing(self):
        return self.shard.lock

    def _reading(self):
        return self.shard.lock

    def _applied(self, plan: Plan) -> None:
        self.shard.written(sum(plan.counts))

    def _execute(self, steps: list[Step]) -> None:
        engine = self.shard.engine
        if engine is None:
            raise WiringError(f"{self.where} does not exist yet: call ensure_schema first")
        for step in steps:
            engine.update(edge_update(step))

    def _retrieve(self, ids: list[str], fields: list[str] | None,
                  dense: bool = False) -> list[tuple[Payload, list[float] | None]]:
        engine = self.shard.engine
        if engine is None or not ids:
            return []
        records = engine.retrieve(ids, True if fields is None else fields,
                                  [DENSE] if dense else False)
        return [(r.payload or {}, r.vector.get(DENSE) if dense else None) for r in records]

    def _scroll(self, where: tuple[Condition, ...], fields: list[str], offset: Any,
                limit: int) -> tuple[list[Payload], Any]:
        engine = self.shard.engine
        if engine is None:
            return [], None
        records, next_offset = engine.scroll(q.ScrollRequest(
            offset=offset, limit=limit, filter=edge_filter(where), with_payload=fields,
            with_vector=False))
        return [r.payload or {} for r in records], next_offset

    def _search(self, dense: list[float] | None, sparse: Sparse | None, n: int,
                where: tuple[Condition, ...]) -> tuple[list[Payload], list[Payload]]:
        engine = self.shard.engine
        if engine is None:
            return [], []
        flt = edge_filter(where)
        asked = [(name, vector) for name, vector in ((DENSE, dense), (SPARSE, sparse))
                 if vector is not None]
        requests = [q.QueryRequest(limit=n, query=q.Query.Nearest(
            q.SparseVector(*vector) if name == SPARSE else vector, using=name),
            filter=flt, with_payload=SHOWN, with_vector=False) for name, vector in asked]
        answers = iter(engine.query_batch(q.QueryBatchRequest(requests)))
        found = {name: [p.payload for p in next(answers)] for name, _ in asked}
        return found.get(DENSE, []), found.get(SPARSE, [])

    def _fuse(self, dense: list[float], sparse: Sparse, n: int, k: int,
              where: tuple[Condition, ...]) -> list[tuple[Payload, float]]:
        engine = self.shard.engine
        if engine is None:
            return []
        flt = edge_filter(where)
        hits = engine.query(q.QueryRequest(
            limit=n, query=q.Fusion.Rrf(k=k), with_payload=SHOWN, with_vector=False,
            prefetches=[q.Prefetch(limit=n, query=q.Query.Nearest(dense, using=DENSE),
                                   filter=flt),
                        q.Prefetch(limit=n, query=q.Query.Nearest(q.SparseVector(*sparse),
                                                                  using=SPARSE), filter=flt)]))
        return [(p.payload, p.score) for p in hits]

    def _count(self, where: tuple[Condition, ...]) -> int:
        engine = self.shard.engine
        return 0 if engine is None else engine.count(q.CountRequest(exact=True,
                                                                    filter=edge_filter(where)))

    def _distinct(self, key: str, where: tuple[Condition, ...], limit: int) -> int:
        engine = self.shard.engine
        if engine is None:
            return 0
        return len(engine.facet(q.FacetRequest(key=key, limit=limit, exact=True,
                                               filter=edge_filter(where))))
