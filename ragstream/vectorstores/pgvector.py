"""The PostgreSQL + pgvector store: one table of chunks per deployment, kept fresh in place.

For a deployment whose chunk table is ``T`` (``settings.store.name_in(settings, "pgvector")``):

- ``T``: one row per chunk (text, hash, model, ``vector(D)``, metadata), an HNSW index on the
  vector (cosine), a GIN index on a generated ``tsvector`` (english), a btree on ``doc_id`` and
  a GIN ``jsonb_path_ops`` index on the metadata;
- ``T_docs``: each document's highest applied version, kept after a delete (the guard must
  remember it, or a late older upsert would bring a deleted document back);
- ``ragstream_store_tables``: one row per chunk table with its model id and dimension (checked
  at start) and a generation counter for result caches.

``apply`` runs a whole batch in one transaction. It first locks the batch's rows of ``T_docs``
in sorted document id order (``FOR UPDATE``), so two workers writing the same documents take
turns per document and never deadlock; the version guard is then decided against versions no
one else can change until commit, with the embedded index's rule (ragstream.index.store). The
upserts go through a binary COPY into a temporary table and one ``INSERT ... ON CONFLICT DO
UPDATE ... WHERE ... IS DISTINCT FROM ...``, so an identical chunk is not rewritten and
``RETURNING`` says exactly which chunks changed.

Keyword ranking is PostgreSQL full text, ``ts_rank`` over an OR of the query's words, divided by
1 + the log of the chunk's length (normalization 1). It is not BM25: it has no IDF, so a common
word weighs as much as a rare one. ``ts_rank_cd`` (cover density) ranked far worse for an OR of
words and cost 4.6 times as much: on BEIR SciFact its keyword nDCG@10 was 0.32 against 0.60, and
at 100k chunks its p50 was 144 ms against 31 (docs/stores-pgvector.md). No BM25 extension is
used because none is packaged for PostgreSQL 15 here, and the ones that exist (ParadeDB
pg_search, VectorChord-bm25) need Rust/pgrx builds that a platform team's PostgreSQL rarely
carries; full text needs nothing beyond the server. Hybrid fusion happens above the store.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import InsufficientPrivilege, UndefinedFile, UndefinedTable
from psycopg_pool import ConnectionPool, PoolTimeout

from ragstream.config import Settings
from ragstream.errors import WiringError, declare_unavailable
from ragstream.vectorstores.base import (NO_FILTER, Candidates, ChunkStore, ChunkUpsert, Counts,
                                         Filter, Operation, StoredChunk, StoreMismatch,
                                         StoreUnavailable, canonical_metadata)

# the runtime treats these as "down, retry later" (PoolTimeout is an OperationalError too; both
# are named so that neither depends on the other's hierarchy). OperationalError also covers a
# deadlock or serialization failure, which a retry of the batch resolves.
declare_unavailable(psycopg.OperationalError, PoolTimeout)

REGISTRY = "ragstream_store_tables"
MIN_PGVECTOR = (0, 8)  # hnsw.iterative_scan: a filtered search that still finds n chunks
# every derived name (T_embedding_hnsw, the longest) must fit PostgreSQL's 63-byte identifiers,
# or two would be cut to the same name
MAX_TABLE_CHARS = 48
# one key for every ragstream schema change in the database: two workers starting at once
# raced on CREATE TABLE IF NOT EXISTS (a unique violation on pg_type)
SCHEMA_LOCK = "ragstream.vectorstores.pgvector.schema"
STAGE = sql.Identifier("pg_temp", "ragstream_stage")
CHUNK_COLUMNS = ("chunk_id", "doc_id", "doc_version", "position", "text", "text_hash", "model_id",
                 "embedding", "metadata_json")
# what makes a stored chunk differ from an upsert (the text is covered by its hash)
COMPARED = ("text_hash", "model_id", "embedding", "position", "metadata_json")
PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
PGCOPY_TRAILER = struct.pack(">h", -1)


class PgvectorMissing(WiringError):
    """The database has no usable pgvector extension: an administrator must install it."""


class PgvectorStore(ChunkStore):
    name = "pgvector"

    def __init__(self, settings: Settings):
        self._table = table_name(settings.store.name_in(settings, "pgvector"))
        self._ef_search = settings.store.pgvector_hnsw_ef_search
        self._hnsw = (settings.store.pgvector_hnsw_m, settings.store.pgvector_hnsw_ef_construction)
        self._sql = _Statements(self._table)
        # the pool opens in the background; a server that is down shows as PoolTimeout on use
        self._pool = ConnectionPool(
            kwargs=connection_parameters(settings), min_size=settings.store.pgvector_pool_min,
            max_size=settings.store.pgvector_pool_max, timeout=settings.store.pgvector_timeout_s,
            name=f"ragstream-pgvector-{self._table}", check=ConnectionPool.check_connection,
            open=True)

    def __repr__(self) -> str:  # the pool holds the DSN and its password: show neither
        return f"PgvectorStore(table={self._table!r})"

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction, committed on success; the server or the pool
        being unreachable becomes ``StoreUnavailable``."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"pgvector table {self._table}: {exc}") from exc

    def ensure_schema(self, model_id: str, dimension: int) -> None:
        s, t = self._sql, self._table
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [SCHEMA_LOCK])
            self._ensure_extension(conn)
            conn.execute(s.create_registry)
            conn.execute(s.register, [t, model_id, dimension])
            held_model, held_dimension = conn.execute(s.registered, [t]).fetchone()
            if (held_model, held_dimension) != (model_id, dimension):
                raise StoreMismatch(
                    f"the pgvector table {t!r} holds {held_dimension}-d vectors of "
                    f"{held_model!r}; this deployment writes {dimension}-d vectors of "
                    f"{model_id!r}. Re-embed into another table (RAGSTREAM_STORE_PGVECTOR_TABLE "
                    f"or RAGSTREAM_GROUP_PREFIX), or drop this one")
            conn.execute(s.create_chunks(dimension))
            column = conn.execute(s.embedding_type, [s.quoted(conn)]).fetchone()
            if column is None or column[0] != f"vector({dimension})":
                raise StoreMismatch(
                    f"the table {t!r} exists but its embedding column is "
                    f"{column[0] if column else 'missing'}, not vector({dimension}): it was not "
                    f"made by ragstream for this model. Choose another "
                    f"RAGSTREAM_STORE_PGVECTOR_TABLE")
            conn.execute(s.create_docs)
            for index in s.create_indexes(*self._hnsw):
                conn.execute(index)

    def _ensure_extension(self, conn: psycopg.Connection) -> None:
        database = conn.info.dbname
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if version is None:
            try:
                with conn.transaction():  # a savepoint: the error is ours to explain
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except UndefinedFile:
                raise PgvectorMissing(
                    f"pgvector is not installed on the PostgreSQL server of database "
                    f"{database!r}: install it (on this project's machines: "
                    f"infra/pgvector/install.sh; see docs/stores-pgvector.md)") from None
            except InsufficientPrivilege:
                raise PgvectorMissing(
                    f"the vector extension is not created in database {database!r} and user "
                    f"{conn.info.user!r} may not create it: ask an administrator to run "
                    f"CREATE EXTENSION vector in it") from None
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        found = tuple(int(part) for part in version[0].split(".")[:2])
        if found < MIN_PGVECTOR:
            raise PgvectorMissing(
                f"database {database!r} has pgvector {version[0]}; ragstream needs 0.8 or newer "
                f"(iterative HNSW scans keep filtered searches complete): ALTER EXTENSION vector "
                f"UPDATE after upgrading the package")

    def apply(self, operations: Sequence[Operation]) -> list[int]:
        if not operations:
            return []
        s = self._sql
        doc_ids = sorted({op.doc_id for op in operations})
        with self._connection() as conn:
            with conn.pipeline():
                conn.execute(s.create_stage)
                # a placeholder row (-1: nothing applied) for each new document, so that it too
                # has a row to lock; inserted in the same order as the locks are taken
                conn.execute(s.add_docs, [doc_ids])
                locked = conn.execute(s.lock_docs, [doc_ids])
            plan = _Plan.of(operations, dict(locked.fetchall()))
            if plan.staged:
                with conn.cursor().copy(s.copy_stage) as copy:
                    copy.write(pgcopy(plan.staged))
            with conn.pipeline():
                results = [conn.execute(*(s.upsert_run(lo, hi) if kind == "upsert" else
                                          s.delete(operations[lo].doc_id, ids)))
                           for kind, lo, hi, ids in plan.steps]
                if plan.raised:
                    conn.execute(s.set_versions, [list(plan.raised), list(plan.raised.values())])
            changed = [0] * len(operations)
            for (kind, lo, hi, _), cursor in zip(plan.steps, results, strict=True):
                written = {row[0] for row in cursor.fetchall()}
                if kind == "upsert":
                    for i in range(lo, hi + 1):
                        op = operations[i]
                        changed[i] = int(isinstance(op, ChunkUpsert) and i in plan.applied
                                         and op.chunk_id in written)
                else:
                    changed[lo] = len(written)
            if any(changed):  # in the same transaction: a cache never sees the change without it
                conn.execute(s.bump_generation, [self._table])
        return changed

    def candidates(self, vector: np.ndarray | None, query: str | None, n: int,
                   where: Filter = NO_FILTER) -> Candidates:
        words = keyword_query(query) if query else None
        if n <= 0 or (vector is None and words is None):
            return Candidates([], [], {})
        condition, params = self._sql.filter(where)
        try:
            with self._connection() as conn:
                # one snapshot for both rankings: a chunk's record is the same in either
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                with conn.pipeline():
                    dense = sparse = None
                    if vector is not None:
                        # an HNSW scan returns at most ef_search rows, and a filter may reject
                        # most of them: iterative scans go on until n pass (the CTE restores
                        # the exact order that relaxed_order gives up)
                        conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                                     "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                                     [str(min(max(self._ef_search, n), 1000))])
                        dense = conn.execute(self._sql.dense(condition),
                                             {**params, "vector": vector_literal(vector), "n": n})
                    if words is not None:
                        sparse = conn.execute(self._sql.sparse(condition),
                                              {**params, "words": words, "n": n})
                rankings = [c.fetchall() if c is not None else [] for c in (dense, sparse)]
        except UndefinedTable:  # no writer has created the table yet: nothing to find
            return Candidates([], [], {})
        chunks = {row[0]: StoredChunk(row[0], row[1], row[2], row[3], json.loads(row[4]))
                  for ranking in rankings for row in ranking}
        return Candidates([r[0] for r in rankings[0]], [r[0] for r in rankings[1]], chunks)

    def counts(self) -> Counts:
        try:
            with self._connection() as conn:
                documents, chunks = conn.execute(self._sql.counts).fetchone()
        except UndefinedTable:
            return Counts(0, 0)
        return Counts(documents, chunks)

    def scan(self, after: str | None, limit: int) -> list[ChunkUpsert]:
        try:
            with self._connection() as conn:
                rows = conn.cursor(binary=True).execute(
                    self._sql.scan, {"after": after, "limit": limit}).fetchall()
        except UndefinedTable:
            return []
        return [ChunkUpsert(chunk_id, doc_id, version, position, text, text_hash, model_id,
                            vector_from_send(embedding), json.loads(metadata))
                for (chunk_id, doc_id, version, position, text, text_hash, model_id, embedding,
                     metadata) in rows]

    def generation(self) -> str:
        try:
            with self._connection() as conn:
                row = conn.execute(self._sql.generation, [self._table]).fetchone()
        except UndefinedTable:
            row = None
        # the table's incarnation too: a table dropped and made again restarts at 0, and a cache
        # keyed by the old table's "3" must not answer for the new one's
        return "none" if row is None else f"{row[0]}:{row[1]}"

    def drop(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [SCHEMA_LOCK])
            conn.execute(self._sql.drop_tables)
            if conn.execute("SELECT to_regclass(%s)", [REGISTRY]).fetchone()[0] is not None:
                conn.execute(self._sql.unregister, [self._table])
        self.close()


def table_name(name: str) -> str:
    """``name``, or, past 48 characters, its start and a hash of it (the derived index names
    must stay distinct within PostgreSQL's 63-byte limit)."""
    raw = name.encode()
    if len(raw) <= MAX_TABLE_CHARS:
        return name
    start = raw[:MAX_TABLE_CHARS - 9].decode(errors="ignore")  # never half a character
    return f"{start}_{hashlib.sha256(raw).hexdigest()[:8]}"


def connection_parameters(settings: Settings) -> dict[str, str]:
    """libpq parameters: the DSN's own, with TLS and the timeout from settings where it gives
    none (a DSN that asks for ``sslmode=verify-full`` is never weakened by the default)."""
    try:
        params = conninfo_to_dict(settings.store.pgvector_dsn.get_secret_value())
    except psycopg.ProgrammingError:
        # the parser's message quotes the string, password included
        raise WiringError("RAGSTREAM_STORE_PGVECTOR_DSN is not a valid PostgreSQL connection "
                          "string (postgresql://user@host:port/database)") from None
    params.setdefault("sslmode", settings.store.pgvector_sslmode)
    if settings.store.pgvector_sslrootcert is not None:
        params["sslrootcert"] = str(settings.store.pgvector_sslrootcert)
    # libpq waits at least 2 s whatever it is told
    params["connect_timeout"] = str(max(2, math.ceil(settings.store.pgvector_timeout_s)))
    params.setdefault("application_name", "ragstream")
    return {k: str(v) for k, v in params.items() if v is not None}


def keyword_query(query: str) -> str | None:
    """The query's words ORed for ``to_tsquery`` (None: no word). ``\\w+`` keeps every tsquery
    operator (``& | ! ( ) : * < > '``) out, so no input can change the query's shape."""
    words = dict.fromkeys(re.findall(r"\w+", query.lower()))
    return " | ".join(words) if words else None


def vector_literal(vector: np.ndarray) -> str:
    # float32 -> float -> repr is exact, and pgvector parses it back to the same float32
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def vector_from_send(raw: bytes) -> np.ndarray:
    """A vector from pgvector's binary form: int16 dimension, int16 unused, big-endian float4s."""
    return np.frombuffer(raw, dtype=">f4", offset=4).astype(np.float32)


def _vector_recv(vector: np.ndarray) -> bytes:
    v = np.asarray(vector, dtype=">f4").ravel()
    return struct.pack(">hh", len(v), 0) + v.tobytes()


def pgcopy(rows: Iterable[tuple[int, ChunkUpsert]], ordinal: bool = True) -> bytes:
    """Upserts in COPY's binary format (CHUNK_COLUMNS, after an ``ord`` column unless
    ``ordinal`` is False): no text formatting of 384 floats per row (a text COPY spent most of
    its time in float formatting)."""
    out = [PGCOPY_HEADER]
    for i, op in rows:
        fields = ((struct.pack(">i", i),) if ordinal else ()) + (
            op.chunk_id.encode(), op.doc_id.encode(), struct.pack(">q", op.doc_version),
            struct.pack(">i", op.position), op.text.encode(), op.text_hash.encode(),
            op.model_id.encode(), _vector_recv(op.vector),
            canonical_metadata(op.metadata).encode())
        out.append(struct.pack(">h", len(fields)))
        for value in fields:
            out += (struct.pack(">i", len(value)), value)
    out.append(PGCOPY_TRAILER)
    return b"".join(out)


@dataclass
class _Plan:
    """What a batch does, decided against the locked document versions.

    ``steps``: ("upsert", first, last, ()) for a run of operations whose applied upserts touch
    distinct chunks (one INSERT: it may not touch a row twice), or ("delete", i, i, chunk ids)."""

    applied: set[int] = field(default_factory=set)
    staged: list[tuple[int, ChunkUpsert]] = field(default_factory=list)
    steps: list[tuple[str, int, int, list[str]]] = field(default_factory=list)
    raised: dict[str, int] = field(default_factory=dict)  # documents whose version went up

    @classmethod
    def of(cls, operations: Sequence[Operation], versions: dict[str, int]) -> _Plan:
        plan, current = cls(), dict(versions)
        run: set[str] | None = None  # the chunk ids of the open upsert run
        for i, op in enumerate(operations):
            applied = current[op.doc_id]
            if op.doc_version < applied:  # older than what this document already has
                continue
            plan.applied.add(i)
            if op.doc_version > applied:
                current[op.doc_id] = plan.raised[op.doc_id] = op.doc_version
            if isinstance(op, ChunkUpsert):
                if run is None or op.chunk_id in run:
                    run = set()
                    plan.steps.append(("upsert", i, i, []))
                run.add(op.chunk_id)
                plan.steps[-1] = ("upsert", plan.steps[-1][1], i, [])
                plan.staged.append((i, op))
            else:
                run = None
                ids = [] if op.all_chunks else list(op.chunk_ids)
                if op.all_chunks or ids:
                    plan.steps.append(("delete", i, i, ids))
        return plan


class _Statements:
    """The SQL of one chunk table. Identifiers only through sql.Identifier; every value is a
    parameter, except the HNSW build options (validated integers; DDL takes no parameters)."""

    def __init__(self, table: str):
        self.table = table
        t, docs = sql.Identifier(table), sql.Identifier(f"{table}_docs")
        self._t, self._docs = t, docs
        registry = sql.Identifier(REGISTRY)
        columns = sql.SQL(", ").join(map(sql.Identifier, CHUNK_COLUMNS))
        self.create_registry = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {r} (table_name text PRIMARY KEY, model_id text NOT NULL,"
            " dimension integer NOT NULL, generation bigint NOT NULL DEFAULT 0,"
            " incarnation uuid NOT NULL DEFAULT gen_random_uuid(),"
            " created_at timestamptz NOT NULL DEFAULT now())").format(r=registry)
        self.register = sql.SQL("INSERT INTO {r} (table_name, model_id, dimension)"
                                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING").format(r=registry)
        self.registered = sql.SQL(
            "SELECT model_id, dimension FROM {r} WHERE table_name = %s").format(r=registry)
        self.unregister = sql.SQL("DELETE FROM {r} WHERE table_name = %s").format(r=registry)
        self.generation = sql.SQL(
            "SELECT incarnation, generation FROM {r} WHERE table_name = %s").format(r=registry)
        self.bump_generation = sql.SQL("UPDATE {r} SET generation = generation + 1"
                                       " WHERE table_name = %s").format(r=registry)
        self.embedding_type = sql.SQL(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped")
        self.create_docs = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {d} (doc_id text COLLATE \"C\" PRIMARY KEY,"
            " version bigint NOT NULL)").format(d=docs)
        self.drop_tables = sql.SQL("DROP TABLE IF EXISTS {t}, {d}").format(t=t, d=docs)
        # code point order ("C"), as Python sorts: the digest and scan pages of two stores agree
        self.add_docs = sql.SQL(
            "INSERT INTO {d} (doc_id, version) SELECT id, -1 FROM unnest(%s::text[]) AS id"
            " ORDER BY id COLLATE \"C\" ON CONFLICT DO NOTHING").format(d=docs)
        self.lock_docs = sql.SQL("SELECT doc_id, version FROM {d} WHERE doc_id = ANY(%s)"
                                 " ORDER BY doc_id FOR UPDATE").format(d=docs)
        self.set_versions = sql.SQL(
            "UPDATE {d} AS d SET version = v.version"
            " FROM unnest(%s::text[], %s::bigint[]) AS v(doc_id, version)"
            " WHERE d.doc_id = v.doc_id").format(d=docs)
        # rows vanish at commit; created once per connection (IF NOT EXISTS is silent after)
        self.create_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {s} (ord integer, chunk_id text, doc_id text,"
            " doc_version bigint, position integer, text text, text_hash text, model_id text,"
            " embedding vector, metadata_json text) ON COMMIT DELETE ROWS").format(s=STAGE)
        self.copy_stage = sql.SQL("COPY {s} (ord, {c}) FROM STDIN (FORMAT BINARY)").format(
            s=STAGE, c=columns)
        self._upsert = sql.SQL(
            "INSERT INTO {t} AS c ({c}) SELECT {c} FROM {s} WHERE ord BETWEEN %s AND %s"
            " ORDER BY chunk_id COLLATE \"C\""
            " ON CONFLICT (chunk_id) DO UPDATE SET {set}"
            " WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING chunk_id").format(
            t=t, c=columns, s=STAGE,
            set=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
                                   for c in CHUNK_COLUMNS[1:]),
            old=sql.SQL(", ").join(sql.Identifier("c", c) for c in COMPARED),
            new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in COMPARED))
        self._delete_all = sql.SQL(
            "DELETE FROM {t} WHERE doc_id = %s RETURNING chunk_id").format(t=t)
        self._delete_some = sql.SQL("DELETE FROM {t} WHERE doc_id = %s AND chunk_id = ANY(%s)"
                                   " RETURNING chunk_id").format(t=t)
        self.counts = sql.SQL("SELECT count(DISTINCT doc_id), count(*) FROM {t}").format(t=t)
        self.scan = sql.SQL(
            "SELECT c.chunk_id, c.doc_id, coalesce(d.version, c.doc_version), c.position, c.text,"
            " c.text_hash, c.model_id, vector_send(c.embedding), c.metadata_json"
            " FROM {t} AS c LEFT JOIN {d} AS d USING (doc_id)"
            " WHERE %(after)s::text IS NULL OR c.chunk_id > %(after)s::text"
            " ORDER BY c.chunk_id LIMIT %(limit)s").format(t=t, d=docs)

    def upsert_run(self, first: int, last: int) -> tuple[sql.Composed, list]:
        return self._upsert, [first, last]

    def delete(self, doc_id: str, chunk_ids: list[str]) -> tuple[sql.Composed, list]:
        """Every chunk of the document when ``chunk_ids`` is empty, else the listed ones."""
        if chunk_ids:
            return self._delete_some, [doc_id, chunk_ids]
        return self._delete_all, [doc_id]

    def quoted(self, conn: psycopg.Connection) -> str:
        return self._t.as_string(conn)

    def create_chunks(self, dimension: int) -> sql.Composed:
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} (chunk_id text COLLATE \"C\" PRIMARY KEY,"
            " doc_id text COLLATE \"C\" NOT NULL, doc_version bigint NOT NULL,"
            " position integer NOT NULL, text text NOT NULL, text_hash text NOT NULL,"
            " model_id text NOT NULL, embedding vector({n}) NOT NULL,"
            # the canonical text is what is compared and read back (as the embedded index
            # does); jsonb is derived from it for the containment filter
            " metadata_json text NOT NULL,"
            " metadata jsonb GENERATED ALWAYS AS (metadata_json::jsonb) STORED,"
            " text_search tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)"
        ).format(t=self._t, n=sql.Literal(dimension))

    def create_indexes(self, m: int, ef_construction: int) -> list[sql.Composed]:
        def named(suffix: str) -> sql.Identifier:
            return sql.Identifier(f"{self.table}_{suffix}")
        return [
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                    " WITH (m = {m}, ef_construction = {ef})").format(
                i=named("embedding_hnsw"), t=self._t, m=sql.Literal(m),
                ef=sql.Literal(ef_construction)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (text_search)").format(
                i=named("text_search"), t=self._t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (doc_id)").format(
                i=named("doc_id"), t=self._t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (metadata jsonb_path_ops)"
                    ).format(i=named("metadata"), t=self._t),
        ]

    def filter(self, where: Filter) -> tuple[sql.Composable, dict]:
        """A condition admitting what ``where.admits`` admits: ``@>`` compares JSON values as
        ``same_value`` does (true is not 1, 1 is 1.0, null matches only a present null)."""
        conditions: list[sql.Composable] = []
        params: dict = {}
        if where.doc_ids is not None:
            conditions.append(sql.SQL("doc_id = ANY(%(doc_ids)s::text[])"))
            params["doc_ids"] = sorted(where.doc_ids)
        if where.metadata:
            conditions.append(sql.SQL("metadata @> %(metadata)s::jsonb"))
            params["metadata"] = canonical_metadata(where.metadata)
        return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")), params

    def dense(self, condition: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "WITH ranked AS MATERIALIZED (SELECT chunk_id, doc_id, position, text, metadata_json,"
            " embedding <=> %(vector)s::vector AS distance FROM {t} WHERE {f}"
            " ORDER BY distance LIMIT %(n)s)"
            " SELECT chunk_id, doc_id, position, text, metadata_json FROM ranked"
            " ORDER BY distance + 0, chunk_id").format(t=self._t, f=condition)

    def sparse(self, condition: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "SELECT chunk_id, doc_id, position, text, metadata_json"
            " FROM {t}, to_tsquery('english', %(words)s) AS query"
            " WHERE text_search @@ query AND {f}"
            " ORDER BY ts_rank(text_search, query, 1) DESC, chunk_id LIMIT %(n)s").format(
            t=self._t, f=condition)
