"""The PostgreSQL + pgvector store against the real server (infra/pgvector/install.sh installs
pgvector into the machine's PostgreSQL 15): what only this backend has to prove. The guarantees
every backend shares are in tests/test_store_conformance.py.

A server without pgvector FAILS these tests with a pointer to the install script; nothing skips.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest
from psycopg import sql

from ragstream.config import Settings
from ragstream.errors import unavailable_types
from ragstream.vectorstores.base import (ChunkUpsert, DocumentDelete, Filter, StoredChunk,
                                         StoreMismatch, StoreUnavailable)
from ragstream.vectorstores.embedded import EmbeddedStore
from ragstream.vectorstores.pgvector import PgvectorMissing, PgvectorStore, keyword_query

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/ragstream"
MODEL = "test-model"
DIM = 8
HASH = "a" * 64


@pytest.fixture(scope="module", autouse=True)
def pgvector_server() -> None:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL database 'ragstream' on 127.0.0.1:5432 ({exc}): run "
                    f"infra/pgvector/install.sh (make test-tools)")
    if not found:
        pytest.fail("PostgreSQL on 127.0.0.1:5432 has no pgvector: run infra/pgvector/install.sh "
                    "(make test-tools)")


def _settings(**overrides) -> Settings:
    overrides.setdefault("group_prefix", f"pgv-{uuid.uuid4().hex[:10]}")
    return Settings.from_env({}, **overrides)


@pytest.fixture
def store():
    s = PgvectorStore(_settings())
    s.ensure_schema(MODEL, DIM)
    yield s
    s.drop()


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def _upsert(chunk_id: str, doc_id: str, version: int = 1, text: str = "some text",
            metadata: dict | None = None, seed: int = 0, text_hash: str = HASH) -> ChunkUpsert:
    return ChunkUpsert(chunk_id, doc_id, version, 0, text, text_hash, MODEL, _vector(seed),
                       metadata or {})


def _catalog(query: str, *params) -> list[tuple]:
    with psycopg.connect(ADMIN_DSN) as conn:
        return conn.execute(query, params).fetchall()


def _registered(table: str) -> list[tuple]:
    return _catalog("SELECT model_id, dimension FROM ragstream_store_tables"
                    " WHERE table_name = %s", table)


def test_schema_is_created_then_another_dimension_or_model_is_refused(store):
    table = store._table
    assert _catalog("SELECT tablename FROM pg_tables WHERE tablename IN (%s, %s) ORDER BY 1",
                    table, f"{table}_docs") == [(table,), (f"{table}_docs",)]
    indexes = dict(_catalog("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
                            table))
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')" \
        in indexes[f"{table}_embedding_hnsw"]
    assert "USING gin (text_search)" in indexes[f"{table}_text_search"]
    assert "btree (doc_id)" in indexes[f"{table}_doc_id"]
    assert "USING gin (metadata jsonb_path_ops)" in indexes[f"{table}_metadata"]
    assert _registered(table) == [(MODEL, DIM)]

    store.ensure_schema(MODEL, DIM)  # a restart checks and goes on
    second = PgvectorStore(_settings(store_pgvector_table=table))
    try:
        with pytest.raises(StoreMismatch, match=rf"'{table}' holds {DIM}-d vectors of "
                                                rf"'{MODEL}'; this deployment writes 16-d"):
            second.ensure_schema(MODEL, 16)
        with pytest.raises(StoreMismatch, match="writes 8-d vectors of 'another-model'"):
            second.ensure_schema("another-model", DIM)
    finally:
        second.close()
    assert _registered(table) == [(MODEL, DIM)]  # the refused starts changed nothing


def test_a_table_not_made_for_this_model_is_refused():
    table = f"foreign_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (chunk_id text PRIMARY KEY, embedding vector(3))")
                     .format(sql.Identifier(table)))
    s = PgvectorStore(_settings(store_pgvector_table=table))
    try:
        with pytest.raises(StoreMismatch, match=r"embedding column is vector\(3\), not "
                                                r"vector\(8\)"):
            s.ensure_schema(MODEL, DIM)
        assert _registered(table) == []
    finally:
        s.drop()


def test_ensure_schema_from_two_processes_at_once_creates_one_schema():
    settings = _settings()
    stores = [PgvectorStore(settings) for _ in range(4)]
    errors: list[BaseException] = []

    def start(s: PgvectorStore) -> None:
        try:
            s.ensure_schema(MODEL, DIM)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert _registered(stores[0]._table) == [(MODEL, DIM)]
    finally:
        for s in stores[1:]:
            s.close()
        stores[0].drop()


def test_a_user_who_may_not_create_the_extension_is_told_what_to_ask_for():
    suffix = uuid.uuid4().hex[:8]
    database, role = f"ragstream_noext_{suffix}", f"ragstream_user_{suffix}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                    sql.Identifier(role)))
    try:
        s = PgvectorStore(_settings(
            store_pgvector_dsn=f"postgresql://{role}@127.0.0.1:5432/{database}"))
        try:
            with pytest.raises(PgvectorMissing, match=rf"user '{role}' may not create it: ask "
                                                      rf"an administrator to run CREATE "
                                                      rf"EXTENSION vector"):
                s.ensure_schema(MODEL, DIM)
        finally:
            s.close()
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_dsn_is_never_shown_and_a_server_down_is_unavailable_not_a_crash(caplog):
    password = f"pw-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    # port 1: nothing listens; the pool gives up after the 1 s timeout
    down = PgvectorStore(_settings(
        store_pgvector_dsn=f"postgresql://postgres:{password}@127.0.0.1:1/ragstream",
        store_pgvector_timeout_s=1.0))
    seen: list[str] = [repr(down), str(down)]
    try:
        for call in (lambda: down.apply([_upsert("c", "d")]),
                     lambda: down.ensure_schema(MODEL, DIM),
                     lambda: down.candidates(_vector(1), "text", 5),
                     down.counts, down.generation):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as raised:
                call()
            assert time.monotonic() - started < 8
            assert isinstance(raised.value, unavailable_types())  # the runtime backs off
            seen += [str(raised.value), repr(raised.value), str(raised.value.__cause__)]
    finally:
        down.close()

    # the same with the right port: trust auth ignores the password, which must stay hidden
    up = PgvectorStore(_settings(
        store_pgvector_dsn=f"postgresql://postgres:{password}@127.0.0.1:5432/ragstream"))
    try:
        up.ensure_schema(MODEL, DIM)
        assert up.apply([_upsert("c", "d")]) == [1]
        seen += [repr(up), str(up)]
    finally:
        up.drop()
    seen += [r.getMessage() for r in caplog.records]
    assert any("connection" in text.lower() for text in seen)  # the failure was reported...
    assert not [text for text in seen if password in text]  # ...without the secret


def test_hostile_ids_metadata_and_queries_are_stored_and_found_verbatim(store):
    hostile = ["x'); DROP TABLE ragstream_store_tables; --", 'q"uote\\back', "%s %(n)s {t}",
               "$1 $$dollar$$", "naïve 日本語 🙂", "a:* & !b | (c) <-> 'd'"]
    ops = [_upsert(f"{h}#{i}", f"doc {h}", text=f"{h} findme{i}",
                   metadata={h: h, "plain": i}, seed=i) for i, h in enumerate(hostile)]
    assert store.apply(ops) == [1] * len(ops)
    assert [(c.chunk_id, c.doc_id, c.text, dict(c.metadata)) for c in store.scan(None, 100)] == \
        sorted((op.chunk_id, op.doc_id, op.text, dict(op.metadata)) for op in ops)
    assert _registered(store._table) == [(MODEL, DIM)]  # nothing was dropped
    for i, (h, op) in enumerate(zip(hostile, ops, strict=True)):
        found = store.candidates(None, f"{h} findme{i}", 10)
        assert found.sparse[0] == op.chunk_id
        assert found.chunks[op.chunk_id] == StoredChunk(op.chunk_id, op.doc_id, 0, op.text,
                                                        op.metadata)
        assert store.candidates(_vector(i), None, 10, Filter(metadata={h: h})).dense == \
            [op.chunk_id]
        assert store.candidates(_vector(i), None, 10,
                                Filter(doc_ids=frozenset({op.doc_id}))).dense == [op.chunk_id]
    for query in hostile + ["'", "!", "&|", ":*", "(", "--", ""]:
        store.candidates(_vector(0), query, 5)  # no query syntax error, whatever the text
    assert store.apply([DocumentDelete(op.doc_id, 2, all_chunks=True) for op in ops]) == \
        [1] * len(ops)
    assert store.counts().chunks == 0


def test_keyword_ranking_is_an_or_of_the_words():
    assert keyword_query("Cats & dogs | (birds) 'x' !y:*") == "cats | dogs | birds | x | y"
    assert keyword_query("-- ' !") is None


def test_metadata_filters_admit_exactly_what_filter_admits(store):
    values = [True, False, 1, 1.0, 0, "1", "true", None, 2.5, "é"]
    chunks = [_upsert(f"c{i}", f"d{i % 3}", metadata={"k": v, "other": i % 2}, seed=i)
              for i, v in enumerate(values)]
    chunks.append(_upsert("no-key", "d0", metadata={"other": 0}, seed=99))
    store.apply(chunks)
    stored = [StoredChunk(c.chunk_id, c.doc_id, 0, c.text, c.metadata) for c in chunks]
    filters = [Filter(metadata={"k": v}) for v in values] + [
        Filter(metadata={"k": 1, "other": 0}), Filter(metadata={"missing": None}),
        Filter(doc_ids=frozenset({"d1"})), Filter(doc_ids=frozenset()),
        Filter(doc_ids=frozenset({"d0", "d2"}), metadata={"other": 1})]
    for where in filters:
        found = store.candidates(_vector(0), "some text", len(chunks), where)
        admitted = {c.chunk_id for c in stored if where.admits(c)}
        assert set(found.dense) == admitted, where
        assert set(found.sparse) == admitted, where
    # true is not 1, 1 is 1.0 (as same_value says)
    assert set(store.candidates(_vector(0), None, 20, Filter(metadata={"k": 1})).dense) == \
        {"c2", "c3"}
    assert set(store.candidates(_vector(0), None, 20, Filter(metadata={"k": True})).dense) == \
        {"c0"}


def test_a_filtered_search_through_the_hnsw_index_still_finds_n_chunks_in_order():
    """1 chunk in 50 passes the filter. When the planner walks the HNSW index (it does when the
    filter matches many rows; here it is told to), a scan that stopped at ef_search rows would
    find about 2 of them; iterative scans go on until n pass, and the order is exact."""
    forced = ("postgresql://postgres@127.0.0.1:5432/ragstream"
              "?options=-c%20enable_seqscan%3Doff%20-c%20enable_bitmapscan%3Doff")
    s = PgvectorStore(_settings(store_pgvector_dsn=forced, store_pgvector_hnsw_ef_search=20))
    rows = 2_000
    try:
        s.ensure_schema(MODEL, DIM)
        s.apply([_upsert(f"c{i:05d}", f"d{i}", metadata={"rare": i % 50 == 0}, seed=i)
                 for i in range(rows)])
        query = _vector(123_456)
        found = s.candidates(query, None, 10, Filter(metadata={"rare": True})).dense
        assert len(found) == 10
        exact = sorted(range(0, rows, 50), key=lambda i: _cosine_distance(_vector(i), query))
        assert len(set(found) & {f"c{i:05d}" for i in exact[:10]}) >= 9  # HNSW is approximate
        distances = [_cosine_distance(_vector(int(c[1:])), query) for c in found]
        assert distances == sorted(distances)
    finally:
        s.drop()


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return 1 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


def test_reads_before_any_writer_created_the_table_find_nothing():
    s = PgvectorStore(_settings())
    try:
        assert s.counts().chunks == 0
        assert s.scan(None, 10) == []
        assert s.candidates(_vector(0), "text", 5).dense == []
        assert s.generation() == "none"
    finally:
        s.drop()


def test_generation_moves_only_with_a_change_and_never_repeats_after_a_drop():
    settings = _settings()
    s = PgvectorStore(settings)
    try:
        s.ensure_schema(MODEL, DIM)
        g0 = s.generation()
        s.apply([_upsert("c", "d")])
        g1 = s.generation()
        s.apply([_upsert("c", "d")])  # a replay
        s.apply([_upsert("c", "d", version=0, seed=5)])  # an outdated version
        assert s.generation() == g1 != g0
    finally:
        s.drop()
    again = PgvectorStore(settings)
    try:
        again.ensure_schema(MODEL, DIM)
        again.apply([_upsert("c", "d")])
        assert again.generation() not in (g0, g1)
    finally:
        again.drop()


def test_scan_gives_the_documents_applied_version_not_the_chunks(store):
    store.apply([_upsert("d#0", "d", 1, seed=1), _upsert("d#1", "d", 1, seed=2)])
    store.apply([_upsert("d#0", "d", 3, seed=1), _upsert("d#1", "d", 3, seed=9)])  # d#0 kept
    assert [(c.chunk_id, c.doc_version) for c in store.scan(None, 10)] == [("d#0", 3), ("d#1", 3)]
    assert np.array_equal(store.scan("d#0", 10)[0].vector, _vector(9))  # exact float32 back


def test_apply_matches_the_embedded_index_script(falkordb, tmp_path):
    """Random batches over a few documents, applied to both stores: the same per-operation
    counts and the same digest (the Lua script of ragstream.index.store is the reference)."""
    settings = _settings(redis_url=falkordb.url, data_dir=tmp_path / "data")
    pg, embedded = PgvectorStore(settings), EmbeddedStore(settings)
    pg.ensure_schema(MODEL, DIM)
    embedded.ensure_schema(MODEL, DIM)
    rng = random.Random(14)
    try:
        for _ in range(60):
            batch = []
            for _ in range(rng.randint(1, 12)):
                doc = f"doc{rng.randint(0, 3)}"
                version = rng.randint(0, 4)
                if rng.random() < 0.75:
                    variant = rng.randint(0, 2)
                    batch.append(ChunkUpsert(
                        f"{doc}#{rng.randint(0, 3)}", doc, version, rng.randint(0, 1),
                        f"text {variant}", f"{variant:064x}", MODEL, _vector(variant),
                        rng.choice([{}, {"k": variant}, {"k": bool(variant)}])))
                else:
                    ids = [f"{doc}#{rng.randint(0, 3)}" for _ in range(rng.randint(0, 2))]
                    batch.append(DocumentDelete(doc, version, ids, rng.random() < 0.4))
            assert pg.apply(batch) == embedded.apply(batch), batch
        assert pg.counts() == embedded.counts()
        assert [(c.chunk_id, c.doc_version) for c in pg.scan(None, 100)] == \
            [(c.chunk_id, c.doc_version) for c in embedded.scan(None, 100)]
        assert pg.digest() == embedded.digest()
    finally:
        pg.drop()
        embedded.drop()


def test_writers_on_the_same_documents_in_opposite_orders_never_deadlock(store):
    """Each writer's batches touch every document, one in ascending and one in descending order:
    without the sorted FOR UPDATE they would lock in opposite orders and deadlock."""
    docs = [f"doc{i}" for i in range(20)]
    errors: list[BaseException] = []

    def write(order: list[str], versions: range) -> None:
        try:
            for v in versions:
                store.apply([_upsert(f"{d}#0", d, v, text=f"v{v}", seed=v) for d in order])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(docs, range(1, 30, 2))),
               threading.Thread(target=write, args=(docs[::-1], range(2, 30, 2)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # whatever the interleaving, the newest version of every document won
    assert {(c.doc_id, c.doc_version, c.text) for c in store.scan(None, 100)} == \
        {(d, 29, "v29") for d in docs}
