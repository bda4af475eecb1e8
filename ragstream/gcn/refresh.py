"""The refresh jobs: incremental, full inference and full retrain, each publishing one version.

Every job ends in the same crash-safe sequence:
    1. save the version's graph snapshot (the next incremental refresh patches it), then a
       *pending* record (version, ids and vectors to write), each atomically
    2. write the vectors into the entities' new slots (invisible to readers)
    3. flip the visible version in one write
    4. announce the version, and drop the pending record
A job killed anywhere leaves the pending record; the next job completes it first (steps 2-4 are
idempotent). Writes above the visible version with no pending record are rolled back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ragstream.gcn.checkpoints import Checkpoints
from ragstream.config import GcnSettings
from ragstream.gcn.graph import EntityGraph
from ragstream.gcn.model import LAYERS, embed, pick_device, split_edges, train, within_hops
from ragstream.gcn.store import EmbeddingStore

log = logging.getLogger(__name__)

# announce(version, model, dimension, node ids written, full refresh?)
Announce = Callable[[int, str, int, list[str], bool], Awaitable[None]]


@dataclass
class RefreshReport:
    mode: str                 # incremental | full | retrain | noop
    version: int | None       # the version now visible
    model: str = ""
    nodes: int = 0
    dirty: int = 0
    touched: int = 0          # dirty entities and their old and new neighbours
    written: int = 0          # entities whose embedding was rewritten
    drift: float = 0.0        # share of the graph changed since the model was trained
    resumed: int | None = None  # a killed job's version that this one completed
    seconds: float = 0.0
    deferred: list[str] = field(default_factory=list)  # dirty, but no text embedding yet

    def summary(self) -> dict:
        out = asdict(self)
        out["deferred"] = len(self.deferred)
        return out


@dataclass
class Pending:
    version: int
    model: str
    changed_since_train: int
    full: bool
    ids: list[str]
    vectors: Tensor

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"version": self.version, "model": self.model, "full": self.full,
                    "changed_since_train": self.changed_since_train, "ids": self.ids,
                    "vectors": self.vectors}, tmp)
        tmp.replace(path)  # atomic: a crash leaves no record or a whole one

    @classmethod
    def load(cls, path: Path) -> Pending:
        d = torch.load(path, weights_only=True)
        return cls(d["version"], d["model"], d["changed_since_train"], d["full"], d["ids"],
                   d["vectors"])


class Refresher:
    def __init__(self, store: EmbeddingStore, state_dir: Path, cfg: GcnSettings,
                 announce: Announce | None = None):
        self.store = store
        self.cfg = cfg
        self.checkpoints = Checkpoints(state_dir / "models")
        self.snapshots = state_dir / "snapshots"
        self.pending_path = state_dir / "pending.pt"
        self.announce = announce
        self.device = pick_device(cfg.device)

    # the jobs -----------------------------------------------------------------------------------

    async def incremental(self, dirty: set[str]) -> RefreshReport:
        """Recompute exactly the embeddings the dirty entities can change, with the frozen model."""
        started = time.perf_counter()
        resumed = await self.resume()
        current = await self.store.current()
        if current is None or not self.checkpoints.exists(current.model) \
                or not self._snapshot(current.version).exists():
            log.info("no usable version to patch; running a full refresh")
            return _resumed(await self.full(dirty), resumed)
        graph = EntityGraph.load(self._snapshot(current.version))
        if len(dirty) > self.cfg.max_incremental_fraction * max(graph.num_nodes, 1):
            return _resumed(await self.full(dirty), resumed)
        if not dirty:
            return RefreshReport("noop", current.version, current.model, graph.num_nodes,
                                 resumed=resumed, seconds=time.perf_counter() - started)

        rows = await self.store.read_entities(dirty)
        deferred = sorted(r.id for r in rows if r.vector is None)
        patched, touched = graph.patched(dirty, rows)
        checkpoint = self.checkpoints.load(current.model)
        changed = current.changed_since_train + int(touched.sum())
        drift = changed / max(checkpoint.meta.get("nodes", 0), 1)
        if drift > self.cfg.drift_threshold:
            log.info("drift past the threshold; retraining", extra={"drift": round(drift, 3)})
            return _resumed(await self.retrain(dirty), resumed)
        report = RefreshReport("incremental", current.version, current.model, patched.num_nodes,
                               len(dirty), int(touched.sum()), drift=drift, resumed=resumed,
                               deferred=deferred)
        if not touched.any() and patched.num_nodes == graph.num_nodes:
            report.mode = "noop"
        else:
            tensors = patched.tensors()
            targets = within_hops(touched, LAYERS, tensors.edge_index, patched.num_nodes)
            vectors = embed(checkpoint.model, tensors, targets, self.device)
            ids = [patched.ids[i] for i in targets.nonzero().flatten().tolist()]
            report.version = await self._publish(patched, Pending(
                current.version + 1, current.model, changed, False, ids, vectors))
            report.written = len(ids)
        report.seconds = time.perf_counter() - started
        return report

    async def full(self, dirty: set[str] = frozenset()) -> RefreshReport:
        """Re-embed every entity with the frozen model (training one first if there is none)."""
        started = time.perf_counter()
        resumed = await self.resume()
        current = await self.store.current()
        if current is None or not self.checkpoints.exists(current.model):
            return _resumed(await self.retrain(dirty), resumed)
        graph = await self.store.read_graph()
        if graph.num_nodes == 0:
            return RefreshReport("noop", current.version, current.model, resumed=resumed)
        checkpoint = self.checkpoints.load(current.model)
        changed = current.changed_since_train
        report = await self._embed_all(graph, checkpoint.version, changed, "full", dirty)
        report.resumed, report.seconds = resumed, time.perf_counter() - started
        report.drift = changed / max(checkpoint.meta.get("nodes", 0), 1)
        return report

    async def retrain(self, dirty: set[str] = frozenset()) -> RefreshReport:
        """Train a new model on the whole graph, then re-embed every entity with it."""
        started = time.perf_counter()
        resumed = await self.resume()
        graph = await self.store.read_graph()
        if graph.num_nodes == 0:
            return RefreshReport("noop", None, resumed=resumed)
        train_pairs, train_weights, held_out = split_edges(
            graph.pairs, graph.weights, self.cfg.validation_fraction, self.cfg.seed)
        training_graph = EntityGraph(graph.ids, graph.text, train_pairs, train_weights)
        result = train(training_graph.tensors(), self.cfg.hidden_dim, self.cfg.dimension,
                       epochs=self.cfg.epochs, lr=self.cfg.learning_rate, dropout=self.cfg.dropout,
                       held_out=held_out, seed=self.cfg.seed, device=self.device)
        version = self.checkpoints.save(result.model, {
            "nodes": graph.num_nodes, "edges": int(graph.pairs.shape[1]), "loss": result.loss,
            "validation_auc": result.validation_auc, "epochs": self.cfg.epochs})
        log.info("gcn model trained", extra={"model": version, "auc": result.validation_auc})
        report = await self._embed_all(graph, version, 0, "retrain", dirty)
        report.resumed, report.seconds = resumed, time.perf_counter() - started
        return report

    async def resume(self) -> int | None:
        """Complete a killed job's version, or roll back writes nobody will complete."""
        if self.pending_path.exists():
            pending = Pending.load(self.pending_path)
            await self._complete(pending)
            return pending.version
        current = await self.store.current()
        rolled_back = await self.store.roll_back_unpublished(current.version if current else 0)
        if rolled_back:
            log.warning("rolled back unpublished embeddings", extra={"entities": rolled_back})
        return None

    # the steps ----------------------------------------------------------------------------------

    async def _embed_all(self, graph: EntityGraph, model: str, changed: int, mode: str,
                         dirty: set[str]) -> RefreshReport:
        checkpoint = self.checkpoints.load(model)
        everything = torch.ones(graph.num_nodes, dtype=torch.bool)
        vectors = embed(checkpoint.model, graph.tensors(), everything, self.device)
        current = await self.store.current()
        version = (current.version if current else 0) + 1
        await self._publish(graph, Pending(version, model, changed, True, list(graph.ids), vectors))
        missing = set(dirty) - set(graph.ids)
        deferred = sorted(r.id for r in await self.store.read_entities(missing)
                          if r.vector is None)
        return RefreshReport(mode, version, model, graph.num_nodes, len(dirty), graph.num_nodes,
                             graph.num_nodes, deferred=deferred)

    async def _publish(self, graph: EntityGraph, pending: Pending) -> int:
        graph.save(self._snapshot(pending.version))
        pending.save(self.pending_path)
        await self._complete(pending)
        return pending.version

    async def _complete(self, pending: Pending) -> None:
        current = await self.store.current()
        visible = current.version if current else 0
        if pending.version < visible:  # superseded: nothing of it can become visible any more
            self.pending_path.unlink(missing_ok=True)
            return
        if pending.version > visible:
            await self.store.write(pending.version, pending.ids, pending.vectors)
            await self.store.flip(pending.version, pending.model, int(pending.vectors.shape[1]),
                                  pending.changed_since_train)
        self._prune_snapshots(pending.version)
        if self.announce is not None:
            await self.announce(pending.version, pending.model, int(pending.vectors.shape[1]),
                                pending.ids, pending.full)
        self.pending_path.unlink(missing_ok=True)

    def _snapshot(self, version: int) -> Path:
        return self.snapshots / f"v{version:08d}.pt"

    def _prune_snapshots(self, newest: int) -> None:
        for path in sorted(self.snapshots.glob("v*.pt"))[:-self.cfg.keep_snapshots]:
            if path != self._snapshot(newest):
                path.unlink(missing_ok=True)


def _resumed(report: RefreshReport, resumed: int | None) -> RefreshReport:
    """A job that handed over to a fuller one still reports the version it completed first."""
    report.resumed = report.resumed or resumed
    return report
