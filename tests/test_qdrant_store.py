"""The Qdrant store's own behaviour, against the real Qdrant engine embedded in process
(qdrant-edge-py); tests/test_store_conformance.py holds what every backend must do.

No Qdrant server can run here. The server store (qdrant-client) shares every read, write and
guard decision with the embedded one (ragstream.vectorstores.qdrant.store); what is tested of it
alone: that it translates the shared requests into the same points and filters as the embedded
store, that it classes an unreachable server as "unavailable", and that its API key stays out of
its repr and errors.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import qdrant_edge as q
from qdrant_client import models

from ragstream.config import Settings
from ragstream.errors import unavailable_types
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import (ChunkUpsert, DocumentDelete, Filter, StoreMismatch,
                                         same_value)
from ragstream.vectorstores.qdrant import mapping
from ragstream.vectorstores.qdrant.edge import QdrantEdgeStore, _Shard, edge_filter, edge_point
from ragstream.vectorstores.qdrant.mapping import (AtMost, Below, HasIds, Match, MatchAny,
                                                   chunk_point, point_id)
from ragstream.vectorstores.qdrant.server import (QdrantServerStore, client_filter, client_point,
                                                  client_update)
from ragstream.vectorstores.search import FusionWeights, Searcher

DIM = 8


def settings_for(tmp_path, **overrides) -> Settings:
    return Settings.from_env({}, data_dir=str(tmp_path), group_prefix="qt", **overrides)


@pytest.fixture
def store(tmp_path):
    s = open_store(settings_for(tmp_path), "qdrant")
    assert isinstance(s, QdrantEdgeStore)
    s.ensure_schema("model-a", DIM)
    yield s
    s.drop()


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def chunk(doc: str, pos: int, text: str, version: int = 1, seed: int | None = None,
          metadata: dict | None = None) -> ChunkUpsert:
    return ChunkUpsert(f"{doc}#{pos}", doc, version, pos, text, f"h:{text}", "model-a",
                       vec(seed if seed is not None else zlib.crc32(f"{doc}#{pos}".encode())),
                       metadata or {})


# the mapping -------------------------------------------------------------------------------------


PROBE = ("print(point_id('doc-1#0'), mapping.document_point_id('doc-1'), "
         "mapping.document_sparse('Stemmed stemming STEMS, words!'))")


def test_point_ids_and_sparse_vectors_are_the_same_in_every_process():
    here = f"{point_id('doc-1#0')} {mapping.document_point_id('doc-1')} " \
           f"{mapping.document_sparse('Stemmed stemming STEMS, words!')}"
    there = subprocess.run(
        [sys.executable, "-c", "from ragstream.vectorstores.qdrant import mapping; "
         "from ragstream.vectorstores.qdrant.mapping import point_id; " + PROBE],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert there == here
    # pinned: a changed namespace or hash would orphan every point of every existing collection
    assert point_id("doc-1#0") == "aed9181b-4641-5135-b771-cad89f390776"
    ids, values = mapping.document_sparse("Stemmed stemming STEMS, words!")
    assert len(ids) == 2 and ids == sorted(ids)  # "stem" three times, "word" once
    assert ids[0] != ids[1] and values[ids.index(mapping.term_id("stem"))] > values[
        ids.index(mapping.term_id("word"))]
    assert mapping.terms("Running runners RAN") == ["run", "runner", "ran"]


def test_bm25_weights_saturate_and_normalise_by_length():
    def weight(text: str, term: str = "fox") -> float:
        ids, values = mapping.document_sparse(text)
        return values[ids.index(mapping.term_id(term))]

    assert weight("fox") < weight("fox fox") < weight("fox fox fox") < mapping.BM25_K1 + 1
    assert weight("fox fox fox fox") - weight("fox fox fox") < weight("fox fox") - weight("fox")
    assert weight("fox " + "word " * 300) < weight("fox " + "word " * 10)
    assert mapping.query_sparse("fox foxes FOX") == ([mapping.term_id("fox")], [1.0])


def test_metadata_terms_follow_same_value():
    values = [1, 1.0, True, False, 0, "1", None, 1.5, "true"]
    for a in values:
        for b in values:
            assert (mapping.metadata_term("k", a) == mapping.metadata_term("k", b)) == \
                same_value(a, b), (a, b)


def test_the_engine_match_confuses_true_with_1_which_is_why_metadata_terms_exist(tmp_path):
    """qdrant-edge-py 0.9 turns MatchValue(True) into the integer 1. If this starts failing, the
    engine's own match may have become usable for metadata (mapping.metadata_term)."""
    shard = q.EdgeShard.create(str(tmp_path / "s"), q.EdgeConfig(
        vectors={"d": q.EdgeVectorParams(size=2, distance=q.Distance.Cosine)}))
    shard.update(q.UpdateOperation.upsert_points([q.Point(1, {"d": [1, 0]}, {"x": 1}),
                                                  q.Point(2, {"d": [0, 1]}, {"x": True})]))
    found, _ = shard.scroll(q.ScrollRequest(limit=10, filter=q.Filter(
        must=[q.FieldCondition("x", match=q.MatchValue(True))])))
    assert [p.id for p in found] == [1]
    shard.close()


# schema ------------------------------------------------------------------------------------------


def test_ensure_schema_refuses_another_dimension_model_or_a_foreign_shard(tmp_path, store):
    store.ensure_schema("model-a", DIM)  # the same again: fine
    with pytest.raises(StoreMismatch, match="model_id 'model-a'"):
        store.ensure_schema("model-b", DIM)
    with pytest.raises(StoreMismatch, match="dimension 8"):
        store.ensure_schema("model-a", DIM * 2)
    # a shard ragstream did not make, with points in it
    foreign = tmp_path / "qdrant" / "foreign"
    shard = q.EdgeShard.create(str(foreign), q.EdgeConfig(
        vectors={"dense": q.EdgeVectorParams(size=DIM, distance=q.Distance.Cosine)}))
    shard.update(q.UpdateOperation.upsert_points([q.Point(1, {"dense": [1.0] * DIM}, {})]))
    shard.close()
    other = open_store(settings_for(tmp_path, store_qdrant_collection="foreign"), "qdrant")
    with pytest.raises(StoreMismatch, match="ragstream did not make it"):
        other.ensure_schema("model-a", DIM)
    other.close()


def test_a_store_reopened_keeps_its_data_and_reads_before_ensure_schema(tmp_path, store):
    assert store.apply([chunk("d", 0, "alpha beta")]) == [1]
    gen = store.generation()
    store.close()
    again = open_store(settings_for(tmp_path), "qdrant")
    assert again.counts().chunks == 1 and again.generation() == gen  # reads need no schema call
    again.close()
    empty = open_store(settings_for(tmp_path, store_qdrant_collection="none_yet"), "qdrant")
    assert empty.counts().chunks == 0 and empty.candidates(vec(1), "alpha", 5).dense == []
    assert empty.scan(None, 10) == [] and empty.generation() == "0"
    empty.drop()


# one process per shard ---------------------------------------------------------------------------


OPEN_IN_CHILD = """
import sys
from ragstream.config import Settings
from ragstream.vectorstores import open_store
store = open_store(Settings.from_env({}, data_dir=sys.argv[1], group_prefix="qt"), "qdrant")
print("opened", store.counts().chunks)
"""


def test_a_second_process_opening_the_shard_fails_clearly(tmp_path, store):
    store.apply([chunk("d", 0, "alpha")])
    child = subprocess.run([sys.executable, "-c", OPEN_IN_CHILD, str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0
    assert "QdrantShardInUse" in child.stderr
    assert f"is open in process {os.getpid()}" in child.stderr
    # in this process a second store shares the open shard
    twin = open_store(settings_for(tmp_path), "qdrant")
    assert twin.counts().chunks == 1
    twin.close()
    store.close()  # the last user closes the shard and releases the directory
    child = subprocess.run([sys.executable, "-c", OPEN_IN_CHILD, str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and child.stdout.strip() == "opened 1", child.stderr
    with pytest.raises(Exception, match="closed"):
        store.counts()


HOLD_IN_CHILD = """
import sys
from ragstream.config import Settings
from ragstream.vectorstores import open_store
store = open_store(Settings(), "qdrant")
print("opened", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


async def test_the_gateway_answers_503_with_the_reason_when_a_worker_owns_the_shard(env, tmp_path):
    """The local layout: the reindex_qdrant worker's process owns the embedded shard, so a
    gateway that searches it cannot open it. It says so (503 and the owner), not a bare 500."""
    import json

    import httpx

    from ragstream.gateway.app import create_app
    from ragstream.gateway.auth import new_key

    key, entry = new_key("reader", ["search"], 1000.0, 1000)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([entry.model_dump()]))
    owner = subprocess.Popen([sys.executable, "-c", HOLD_IN_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, **env, "RAGSTREAM_STORE_SEARCH": "qdrant"})
    try:
        assert owner.stdout.readline().strip() == "opened"
        app = create_app(Settings.from_env(env, store_search="qdrant", api_keys_file=keys_file))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            r = await client.get("/v1/search", params={"q": "zebrafish"},
                                 headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 503, r.text
        assert f"is open in process {owner.pid}" in r.json()["detail"]
    finally:
        owner.stdin.close()
        owner.wait(30)


def test_the_engine_itself_refuses_a_second_writer_of_its_wal(tmp_path, store):
    """What the lock file stands in front of: the engine locks its WAL, so even without this
    store's lock a second open fails rather than corrupts."""
    with pytest.raises(Exception, match="WouldBlock"):
        q.EdgeShard.load(str(store.shard.path))


# the version guard (Qdrant specifics; the conformance suite has the shared cases) ---------------


def test_a_newer_version_is_carried_onto_unchanged_chunks(store):
    first = [chunk("d", 0, "one", 1), chunk("d", 1, "two", 1)]
    assert store.apply(first) == [1, 1]
    # version 2 changes only chunk 1: chunk 0 is not rewritten, but takes the document's version
    second = [dataclasses.replace(first[0], doc_version=2), chunk("d", 1, "two, edited", 2)]
    gen = store.generation()
    assert store.apply(second) == [0, 1]
    assert store.generation() != gen
    assert [(c.chunk_id, c.doc_version) for c in store.scan(None, 10)] == [("d#0", 2), ("d#1", 2)]
    # so the server's per-point condition refuses a version-1 write of either chunk
    assert store.apply([first[0], first[1]]) == [0, 0]
    gen = store.generation()
    assert store.apply(second) == [0, 0] and store.generation() == gen  # a replay: no new token


def test_a_delete_of_everything_keeps_the_version_and_refuses_the_past(store):
    assert store.apply([chunk("d", 0, "a", 1), chunk("d", 1, "b", 1)]) == [1, 1]
    assert store.apply([DocumentDelete("d", 3, all_chunks=True)]) == [2]
    assert store.counts().chunks == 0
    assert store.apply([chunk("d", 0, "a", 2)]) == [0]  # older than the delete
    assert store.apply([chunk("d", 0, "a", 3)]) == [1]  # the delete's version may write again
    # within one batch: written, deleted, written again
    ops = [chunk("e", 0, "x", 1), DocumentDelete("e", 1, all_chunks=True), chunk("e", 1, "y", 2)]
    assert store.apply(ops) == [1, 1, 1]
    assert [c.chunk_id for c in store.scan(None, 10)] == ["d#0", "e#1"]


# search ------------------------------------------------------------------------------------------


CORPUS = {
    "bees": "Honey bees collect nectar and pollen; the hive stores honey for winter.",
    "wasps": "Wasps hunt insects and do not make honey.",
    "hive": "A hive of bees keeps its honey sealed with wax. Bees bees bees.",
    "garden": "A garden of flowers: the flowers feed insects in summer.",
    "engine": "The engine's pistons move inside its cylinders.",
    "stemming": "Stemmers map running and runs to one stem: run.",
}


@pytest.fixture
def corpus(store):
    ops = [chunk(doc, 0, text, seed=i, metadata={"n": i, "even": i % 2 == 0, "group": doc[0]})
           for i, (doc, text) in enumerate(CORPUS.items())]
    assert store.apply(ops) == [1] * len(ops)
    return store


def test_bm25_ranks_rare_terms_and_stems(corpus):
    assert corpus.candidates(None, "pistons", 10).sparse == ["engine#0"]
    assert corpus.candidates(None, "RUNNING", 10).sparse == ["stemming#0"]
    ranked = corpus.candidates(None, "honey bees", 10).sparse
    # "bees" is rarer than "honey" (2 chunks vs 3): both-term chunks first, "hive" repeats bees
    assert ranked[:2] == ["hive#0", "bees#0"] and ranked[2] == "wasps#0"
    assert set(ranked) == {"hive#0", "bees#0", "wasps#0"}
    assert corpus.candidates(None, "zebra", 10).sparse == []
    assert corpus.candidates(None, "?! ...", 10).sparse == []  # no words at all


def test_dense_ranking_is_cosine(corpus):
    target = vec(3)  # the "garden" chunk's vector
    assert corpus.candidates(target * 5, None, 1).dense == ["garden#0"]  # scale does not matter
    ranked = corpus.candidates(target, None, 6).dense
    vectors = {f"{d}#0": vec(i) for i, d in enumerate(CORPUS)}
    cos = {c: float(v @ target / np.linalg.norm(v) / np.linalg.norm(target))
           for c, v in vectors.items()}
    assert ranked == sorted(cos, key=lambda c: -cos[c])


@pytest.mark.parametrize("where", [
    Filter(doc_ids=frozenset({"bees", "garden"})),
    Filter(metadata={"n": 1}), Filter(metadata={"n": 1.0}), Filter(metadata={"n": True}),
    Filter(metadata={"even": True}), Filter(metadata={"even": 1}),
    Filter(metadata={"group": "w"}), Filter(metadata={"group": "w", "n": 2}),
    Filter(metadata={"missing": None}), Filter(doc_ids=frozenset()),
    Filter(doc_ids=frozenset({"hive"}), metadata={"even": True}),
], ids=lambda w: f"docs={None if w.doc_ids is None else sorted(w.doc_ids)} meta={w.metadata}")
def test_filters_admit_what_filter_admits_says(corpus, where):
    found = corpus.candidates(vec(0), "honey flowers insects pistons run", 20, where)
    every = {c.chunk_id: c for c in (corpus.candidates(vec(0), None, 20).chunks.values())}
    admitted = {c for c, record in every.items() if where.admits(record)}
    assert set(found.dense) == admitted
    assert set(found.sparse) <= admitted
    assert all(where.admits(r) for r in found.chunks.values())


def test_qdrant_rrf_gives_ragstreams_fusion_scores(corpus, tmp_path):
    settings = settings_for(tmp_path)
    searcher = Searcher(settings, embedder=None, store=corpus)
    for seed, query in ((0, "honey bees"), (4, "insects flowers engine"), (5, "run hive")):
        found = corpus.candidates(vec(seed), query, 6)
        ours = {h.chunk_id: h.score for h in searcher._fuse(found, 6, FusionWeights(), False)}
        native = dict(corpus.fused(vec(seed), query, 6, settings.rrf_k))
        assert native.keys() == ours.keys()
        for chunk_id, score in ours.items():
            assert native[chunk_id] == pytest.approx(score, rel=1e-6), chunk_id


# the optimizer ---------------------------------------------------------------------------------


def test_background_optimizes_between_writes_lose_and_change_nothing(tmp_path, monkeypatch):
    optimized = threading.Event()
    real = _Shard.optimize

    def watched(shard):
        result = real(shard)
        optimized.set()
        return result

    monkeypatch.setattr(_Shard, "optimize", watched)
    s = open_store(settings_for(tmp_path, store_qdrant_optimize_every=200), "qdrant")
    s.ensure_schema("model-a", DIM)
    for batch in range(10):
        ops = [chunk(f"d{batch}", i, f"text {batch} {i} common words", seed=batch * 100 + i)
               for i in range(100)]
        assert s.apply(ops) == [1] * 100
        assert s.candidates(vec(batch * 100), None, 1).dense == [f"d{batch}#0"]
    assert optimized.wait(60), "the optimizer thread never ran"
    assert s.apply([DocumentDelete(f"d{b}", 2, all_chunks=True) for b in range(5)]) == [100] * 5
    digest = s.digest()
    s.close()  # waits for an optimize in flight
    again = open_store(settings_for(tmp_path), "qdrant")
    assert again.counts().chunks == 500 and again.digest() == digest
    assert again.optimize() in (True, False)
    assert again.candidates(vec(900), None, 1).dense == ["d9#0"]
    again.drop()


def test_optimize_leaves_the_rest_of_the_process_running(tmp_path):
    """qdrant-edge-py holds the GIL through ``optimize()``: run in this process it stopped every
    thread (the worker's event loop and Kafka heartbeats) for as long as it took. It runs in a
    child process, so a thread here keeps ticking, and the shard reads the same afterwards."""
    s = open_store(settings_for(tmp_path), "qdrant")
    s.ensure_schema("model-b", 384)
    # 7k 384-d vectors: over the engine's indexing threshold (10 MB), so there is a graph to build
    vectors = np.random.default_rng(0).standard_normal((7_000, 384)).astype(np.float32)
    for start in range(0, len(vectors), 500):
        s.apply([ChunkUpsert(f"d{i // 10}#{i % 10}", f"d{i // 10}", 1, i % 10, f"text {i}",
                             f"h{i}", "model-b", vectors[i], {})
                 for i in range(start, start + 500)])
    digest = s.digest()
    result: list[bool] = []
    done = threading.Event()

    def optimize():
        try:
            result.append(s.optimize())
        finally:
            done.set()

    ticks: list[float] = []
    started = time.monotonic()
    threading.Thread(target=optimize).start()
    while not done.wait(0.005):
        ticks.append(time.monotonic())
    took = time.monotonic() - started
    gaps = [b - a for a, b in zip([started, *ticks], ticks, strict=False)]
    assert result == [True], "nothing was optimized: the test needs more points"
    assert max(gaps) < took / 2, f"a gap of {max(gaps):.2f} s in an optimize of {took:.2f} s"
    assert s.digest() == digest and s.counts().chunks == 7_000
    assert s.candidates(vectors[4_321], None, 1).dense == ["d432#1"]
    s.drop()


# the server store, without a server ------------------------------------------------------------


def _edge_shape(f: q.Filter) -> list:
    out = []
    for c in f.must:
        if isinstance(c, q.HasIdCondition):
            out.append(("has_id", sorted(str(i) for i in c.point_ids)))
        elif isinstance(c.match, q.MatchValue):
            out.append((c.key, "eq", c.match.value))
        elif isinstance(c.match, q.MatchAny):
            out.append((c.key, "any", list(c.match.value)))
        else:
            out.append((c.key, "range", c.range.lte, c.range.lt))
    return out


def _client_shape(f: models.Filter) -> list:
    out = []
    for c in f.must:
        if isinstance(c, models.HasIdCondition):
            out.append(("has_id", sorted(str(i) for i in c.has_id)))
        elif isinstance(c.match, models.MatchValue):
            out.append((c.key, "eq", c.match.value))
        elif isinstance(c.match, models.MatchAny):
            out.append((c.key, "any", list(c.match.any)))
        else:
            out.append((c.key, "range", c.range.lte, c.range.lt))
    return out


def test_both_engines_build_the_same_points_and_filters():
    op = chunk("doc", 3, "Bees make honey.", 7, metadata={"lang": "en", "n": 1.0, "ok": True})
    spec = chunk_point(op, 9)
    edge, client = edge_point(spec), client_point(spec)
    assert str(edge.id) == client.id == point_id("doc#3")
    assert edge.payload == client.payload == spec.payload
    assert spec.payload["doc_version"] == 9 and spec.payload["metadata_terms"] == [
        '["lang","en"]', '["n",1]', '["ok",true]']
    assert edge.vector["dense"] == pytest.approx(client.vector["dense"])
    assert edge.vector["bm25"].indices == client.vector["bm25"].indices
    assert edge.vector["bm25"].values == pytest.approx(client.vector["bm25"].values)
    conditions = (Match("kind", "chunk"), MatchAny("doc_id", ("a", "b")),
                  AtMost("doc_version", 4), Below("doc_version", 5), HasIds((point_id("x"),)))
    assert _edge_shape(edge_filter(conditions)) == _client_shape(client_filter(conditions))
    # an upsert step keeps its condition as the server's update_filter
    step = mapping.Upsert((spec,), (AtMost("doc_version", 9),))
    request = client_update(step).upsert
    assert request.update_filter == client_filter((AtMost("doc_version", 9),))
    assert [p.id for p in request.points] == [spec.id]


def test_open_qdrant_picks_the_server_when_a_url_is_set(tmp_path):
    server = open_store(settings_for(tmp_path, store_qdrant_url="http://127.0.0.1:1",
                                     store_qdrant_api_key="s3cret-key"), "qdrant")
    assert isinstance(server, QdrantServerStore)
    assert "s3cret" not in repr(server) and "s3cret" not in server.where
    server.close()


def test_an_unreachable_server_is_unavailable_not_an_error(tmp_path):
    import socket
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = QdrantServerStore(settings_for(
        tmp_path, store_qdrant_url=f"http://127.0.0.1:{port}",
        store_qdrant_api_key="s3cret-key", store_qdrant_timeout_s=2))
    started = time.monotonic()
    for call in (lambda: server.ensure_schema("model-a", DIM),
                 lambda: server.apply([chunk("d", 0, "x")]), server.counts):
        with pytest.raises(unavailable_types()) as caught:
            call()
        assert "s3cret" not in str(caught.value)
    assert time.monotonic() - started < 30
    server.close()


@pytest.mark.parametrize("status, expected", [(503, "unavailable"), (500, "unavailable"),
                                              (429, "unavailable"), (404, "missing"),
                                              (400, "error")])
def test_server_answers_are_classed_as_unavailable_missing_or_errors(tmp_path, status, expected):
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    server = QdrantServerStore(settings_for(tmp_path, store_qdrant_url="http://127.0.0.1:1"))

    def answer():
        raise UnexpectedResponse(status, "", b"{}", httpx.Headers())

    if expected == "unavailable":
        with pytest.raises(unavailable_types()):
            server._call(answer, missing=[])
    elif expected == "missing":  # a collection not made yet reads as empty
        assert server._call(answer, missing=[]) == []
        with pytest.raises(UnexpectedResponse):  # ... but a write to it is an error
            server._call(answer)
    else:
        with pytest.raises(UnexpectedResponse):
            server._call(answer, missing=[])
    server.close()
