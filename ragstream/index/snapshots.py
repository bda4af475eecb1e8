"""Versioned index snapshots on disk, published by an atomic pointer swap.

    <data_dir>/index/CURRENT        "v000007": the live version (replaced with os.replace)
    <data_dir>/index/v000007/       manifest.json, chunks.jsonl, dense.usearch, sparse/
    <data_dir>/index/v000008.tmp/   a version being built; never read

A version directory is complete before CURRENT names it, and it is never changed afterwards.
Readers copy the sparse index out before they update it; the previous version is kept for readers
still loading it, older ones are removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragstream.index.segments import DenseSegment, SparseSegment
from ragstream.index.store import ChunkRecord

CURRENT = "CURRENT"
KEEP_VERSIONS = 2


@dataclass(frozen=True)
class Manifest:
    version: int
    watermark: str  # the last change-log id the snapshot includes
    chunks: int
    created_at: float

    @property
    def name(self) -> str:
        return version_name(self.version)


def version_name(version: int) -> str:
    return f"v{version:06d}"


def index_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "index"


def current(root: Path) -> Manifest | None:
    try:
        name = (root / CURRENT).read_text().strip()
        return Manifest(**json.loads((root / name / "manifest.json").read_text()))
    except FileNotFoundError:
        return None


def read_chunks(root: Path, manifest: Manifest) -> Iterator[ChunkRecord]:
    with open(root / manifest.name / "chunks.jsonl", encoding="utf-8") as f:
        for line in f:
            yield ChunkRecord(**json.loads(line))


def dense_path(root: Path, manifest: Manifest) -> Path:
    return root / manifest.name / "dense.usearch"


def sparse_path(root: Path, manifest: Manifest) -> Path:
    return root / manifest.name / "sparse"


def write(root: Path, watermark: str, chunks: Iterable[tuple[ChunkRecord, np.ndarray]],
          created_at: float) -> Manifest:
    """Build the next version beside the live one, then make it live with one atomic rename."""
    root.mkdir(parents=True, exist_ok=True)
    live = current(root)
    version = (live.version if live else 0) + 1
    _remove_unpublished(root, version)
    tmp = root / f"{version_name(version)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a build that crashed
    tmp.mkdir()

    ordered = sorted(chunks, key=lambda c: c[0].chunk_id)
    records = [r for r, _ in ordered]
    with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    dense = DenseSegment()
    if ordered:
        dense.upsert([r.chunk_id for r in records], np.stack([v for _, v in ordered]))
    dense.save(tmp / "dense.usearch")
    sparse = SparseSegment(tmp / "sparse")
    sparse.upsert([(r.chunk_id, r.text) for r in records])
    sparse.commit()
    sparse.close()
    manifest = Manifest(version, watermark, len(records), created_at)
    (tmp / "manifest.json").write_text(json.dumps(asdict(manifest)))
    _fsync_tree(tmp)

    final = root / manifest.name
    os.rename(tmp, final)
    pointer = root / f"{CURRENT}.tmp"
    pointer.write_text(manifest.name)
    os.replace(pointer, root / CURRENT)
    _remove_old_versions(root, version)
    return manifest


def _remove_unpublished(root: Path, first: int) -> None:
    """Remove versions from ``first`` on: a compaction that crashed after renaming its version
    into place but before CURRENT named it left one behind, no reader ever saw it, and the next
    compaction's rename onto it failed (ENOTEMPTY) every time, so the log was never trimmed."""
    for path in root.glob("v*"):
        if path.name[1:].isdigit() and int(path.name[1:]) >= first:
            shutil.rmtree(path, ignore_errors=True)


def _remove_old_versions(root: Path, live: int) -> None:
    for path in root.glob("v*"):
        name = path.name
        if name.endswith(".tmp") or not name[1:].isdigit():
            continue
        if int(name[1:]) <= live - KEEP_VERSIONS:
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
