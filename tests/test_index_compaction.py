"""Compaction on a live index (real FalkorDB): readers never fail or see a partial index, a
change made during the rebuild is kept, and a new reader starts from the snapshot."""

from __future__ import annotations

import threading
import time

import numpy as np

from ragstream.vectorstores.search import FusionWeights, Searcher
from ragstream.index import snapshots
from ragstream.index.compaction import compact
from ragstream.index.replica import IndexReplica
from ragstream.index.store import APPLY_CHANGES, delete_args, upsert_args
from ragstream.chunking import text_hash

N = 300
SPARSE = FusionWeights(dense=0, sparse=1)
DENSE = FusionWeights(dense=1, sparse=0)


def _write(client, prefix: str, ops: list[list]) -> list[int]:
    return client.register_script(APPLY_CHANGES)(keys=[], args=[prefix, *[a for op in ops
                                                                          for a in op]])


def _chunk(i: int, rng: np.random.Generator, word: str = "common") -> list:
    text = f"{word} chunk number{i} about topic{i % 7}"
    vector = rng.normal(size=384).astype(np.float32)
    return upsert_args(f"doc{i}#0", f"doc{i}", 1, 0, text, text_hash(text), "test-model",
                       vector / np.linalg.norm(vector))


def test_queries_during_compaction_never_fail_or_see_a_partial_index(settings, redis_client,
                                                                     minilm):
    rng = np.random.default_rng(7)
    prefix = settings.group_prefix
    _write(redis_client, prefix, [_chunk(i, rng) for i in range(N)])
    searcher = Searcher(settings, minilm)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def query_forever() -> None:
        while not stop.is_set():
            try:
                sparse = searcher.search("common", k=N + 10, weights=SPARSE)
                dense = searcher.search("a question", k=N + 10, weights=DENSE)
                seen.append((len(sparse), len(dense)))
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)
                return

    reader = threading.Thread(target=query_forever)
    reader.start()
    try:
        # at least three compactions, and on until the reader has answered three times while
        # they ran: on a loaded machine one query can outlast three compactions
        versions: list[int] = []
        deadline = time.monotonic() + 180
        while len(versions) < 3 or (len(seen) < 3 and time.monotonic() < deadline):
            versions.append(compact(settings)["version"])
    finally:
        stop.set()
        reader.join(60)
    assert not errors, errors
    assert versions == list(range(1, len(versions) + 1))
    assert len(seen) >= 3 and all(s == N for s, _ in seen), set(seen)
    assert all(d >= 0.95 * N for _, d in seen), set(seen)  # HNSW: near-complete at this size
    assert searcher.store.replica.refresh().version == versions[-1]
    searcher.close()
    # the two newest versions are kept for readers still loading the previous one
    root = snapshots.index_dir(settings.data_dir)
    assert sorted(p.name for p in root.glob("v*")) == [
        snapshots.version_name(v) for v in versions[-2:]]


def test_changes_during_compaction_are_kept_and_readers_start_from_the_snapshot(
        settings, redis_client):
    rng = np.random.default_rng(11)
    prefix = settings.group_prefix
    _write(redis_client, prefix, [_chunk(i, rng) for i in range(50)])
    first = compact(settings)

    # changes after the snapshot: one new chunk, one deleted document
    _write(redis_client, prefix, [_chunk(50, rng, word="late"), delete_args("doc3", 2, [], True)])
    replica = IndexReplica(settings)
    state = replica.refresh()
    assert state.version == first["version"]  # loaded, not rebuilt from the log
    assert len(state.chunks) == 50 and "doc50#0" in state.chunks and "doc3#0" not in state.chunks
    assert len(state.dense) == 50 and len(state.sparse) == 50
    assert [c for c, _ in state.sparse.search("late", 5)] == ["doc50#0"]

    # a second compaction trims the log below the first snapshot; this replica moves over
    second = compact(settings)
    assert redis_client.get(f"{prefix}:index:log_floor").decode() == first["watermark"]
    state = replica.refresh()
    assert state.version == second["version"] and len(state.chunks) == 50
    replica.close()

    # replaying the same writes changes nothing and logs nothing
    length = redis_client.xlen(f"{prefix}:index:log")
    rng = np.random.default_rng(11)
    assert sum(_write(redis_client, prefix, [_chunk(i, rng) for i in range(50)])) == 0
    assert redis_client.xlen(f"{prefix}:index:log") == length


def test_a_compaction_that_crashed_before_publishing_does_not_block_the_next(settings,
                                                                             redis_client):
    prefix = settings.group_prefix
    rng = np.random.default_rng(5)
    _write(redis_client, prefix, [_chunk(i, rng) for i in range(20)])
    first = compact(settings)
    root = snapshots.index_dir(settings.data_dir)
    # a crash between the rename into place and the CURRENT swap leaves the next version
    # complete on disk, but never published
    orphan = root / snapshots.version_name(first["version"] + 1)
    orphan.mkdir()
    (orphan / "manifest.json").write_text("{}")
    _write(redis_client, prefix, [_chunk(i, rng, "fresh") for i in range(20, 25)])
    second = compact(settings)
    assert second["version"] == first["version"] + 1 and second["chunks"] == 25
    assert snapshots.current(root).chunks == 25
    third = compact(settings)  # and compaction goes on after it
    assert third["version"] == second["version"] + 1
