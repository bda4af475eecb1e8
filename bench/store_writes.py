"""The reindex worker's write rate into a store, next to the store's own bulk write of the same
rows done directly, in the same run: ``ratio`` = worker / direct (the target is 0.8 or more).

The rows: 10k chunks (2k with --quick) of whole documents, as the embedding worker emits them:
each SciFact abstract is a document, its 40-word windows its chunks (5.4 a document), with
synthetic 384-d vectors (the worker refuses any model but the deployment's, and the vectors'
values do not change a write's cost), as chunks.embedded.v1 events on an embedded Kafka.

- Worker: the store's reindex worker in this process, consuming those events. Its write rate is
  the rows over the wall time from its first fetch's return to its last commit's: fetching,
  decoding and validating, the version-guarded ``apply`` in the store, the offset commits. The
  runtime reads the next batch ahead while one is written, so the batches' own times
  (``ragstream_batch_process_seconds``) overlap, and their sum would understate the rate. It runs
  twice on events whose vectors are base64 (``RAGSTREAM_VECTOR_ENCODING=base64``, the project's
  figure, the better run), then once on float lists (the default, reported beside it). The
  end-to-end rate, from joining the group to the last change, is reported too.
- The broker is the embedded Tansu with its topics in memory. Its durable storage, a SeaweedFS
  S3 server beside it, took a whole core of this 2-core machine while the worker read (and none
  while the direct write ran), which cut the worker's rate by a third: what it measured was the
  broker's storage, which a deployment runs on other machines. Tansu itself still serves the
  fetches here, with about two thirds of a core during the worker's batches.
- Qdrant Edge builds its HNSW graph in ``optimize()``, which the store runs every 10k written
  points with the shard closed (docs/stores-qdrant.md): the worker's writes wait for it, and the
  direct write never runs it. The graph build is part of neither side here (the worker's store
  is set to optimize past the rows); one ``optimize()`` of the direct write's rows is timed and
  reported on its own.
- Direct: the same rows into a fresh namespace of the same store, by its native bulk path, in
  pages of 500 with no version guard:
  - embedded: what the index keeps for a chunk when no version is guarded (no document
    version, no stored hash read): the chunk's hash, its document's chunk set (what a delete
    reads) and the change-log entry that every reader replays (without it no reader ever sees
    the row: the log is the index's data, not bookkeeping). Written two ways, and the faster
    is the baseline: pipelined HSET, SADD and XADD; and one unguarded Lua call a page, which
    beats the pipeline here (redis-py packs one command a chunk instead of three);
  - pgvector: a binary ``COPY`` into a table with the same HNSW, GIN and btree indexes live;
  - qdrant: point upserts straight into the embedded engine's shard (the same mapping).

    .venv/bin/python bench/store_writes.py --store pgvector [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402
from bench.retrieval_support import load_beir, services  # noqa: E402
from bench.store_queries import WINDOW, vectors  # noqa: E402
from ragstream.config import Settings  # noqa: E402
from ragstream.embedders import MiniLMEmbedder  # noqa: E402
from ragstream.publisher import Publisher  # noqa: E402
from ragstream.runtime import WorkerRuntime  # noqa: E402
from ragstream.transport import consumer_factory, make_producer  # noqa: E402
from ragstream.vectorstores import open_store  # noqa: E402
from ragstream.vectorstores.base import ChunkUpsert, canonical_metadata  # noqa: E402
from schemas.catalogue import CHUNK_EMBEDDED  # noqa: E402
from schemas.envelope import Envelope, derived_event_id  # noqa: E402
from schemas.payloads import ChunkEmbedded, VectorEncoding, vector_fields  # noqa: E402
from workers import load, reindex_worker  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/scifact_beir"
PAGE = 500
SOURCE_TIME = datetime.now(UTC)


def rows(total: int, data: Path) -> list[ChunkUpsert]:
    """``total`` chunks of whole documents, as the embedding worker emits them: each SciFact
    abstract is a document, its 40-word windows its chunks (5.4 a document)."""
    vecs = vectors(total)
    model = MiniLMEmbedder.model_id
    out: list[ChunkUpsert] = []
    for doc_id, (_, text) in load_beir(data).corpus.items():
        words = text.split()
        for position, start in enumerate(range(0, max(len(words), 1), WINDOW)):
            if len(out) == total:
                return out
            i = len(out)
            out.append(ChunkUpsert(f"{doc_id}#{position}", doc_id, 1, position,
                                   " ".join(words[start:start + WINDOW]), f"{i:064x}", model,
                                   vecs[i], {"n": i % 7}))
    return out


def event(c: ChunkUpsert, encoding: VectorEncoding) -> Envelope:
    """The chunk as the embedding worker emits it: with its document's event time, and no
    field it leaves out (the worker's emits drop None fields)."""
    payload = ChunkEmbedded(chunk_id=c.chunk_id, doc_id=c.doc_id, doc_version=c.doc_version,
                            position=c.position, text=c.text, text_hash=c.text_hash,
                            model_id=c.model_id, metadata=dict(c.metadata),
                            source_time=SOURCE_TIME, **vector_fields(c.vector, encoding))
    return Envelope(id=derived_event_id(CHUNK_EMBEDDED, c.chunk_id, 1), type=CHUNK_EMBEDDED,
                    source="bench/store_writes", subject=c.doc_id,
                    data=payload.model_dump(mode="json", exclude_none=True))


async def worker_rates(settings: Settings, store: str, data: list[ChunkUpsert],
                       encoding: VectorEncoding) -> tuple[float, float]:
    """(rows per second of the worker's own time, rows per second end to end), for events whose
    vectors are in ``encoding``. The worker's own time is the wall time from its first fetch's
    return to its last commit's: it reads ahead while a batch's store write is in flight, so the
    batches' own times overlap and their sum would overstate it. The group goes on from its last
    run's commits: it reads only these events, into an empty store (the last run's rows were
    dropped)."""
    async with Publisher(settings) as pub:
        for i in range(0, len(data), PAGE):
            await pub.publish([event(c, encoding) for c in data[i:i + PAGE]])
    worker = load(reindex_worker(store))()
    clock = _Clock()
    runtime = WorkerRuntime(worker, settings, clock.timing(consumer_factory(settings)),
                            make_producer(settings))
    task = asyncio.create_task(runtime.run())
    started = time.perf_counter()
    try:
        while _sample(runtime, "ragstream_index_changes_total",
                      store=store, op="upsert") < len(data):
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        # the last batch's commit comes back after its changes count
        while _sample(runtime, "ragstream_events_processed_total", worker=worker.name,
                      topic="chunks.embedded.v1") < len(data):
            await asyncio.sleep(0.01)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 60)
    open_store(settings, store).drop()
    return len(data) / (clock.last_commit - clock.first_fetch), len(data) / seconds


def _sample(runtime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


class _Clock:
    """When a consumer first handed out records, and when its last commit returned."""

    first_fetch = last_commit = 0.0

    def timing(self, factory):
        def make(**kw):
            consumer = factory(**kw)
            getmany, commit = consumer.getmany, consumer.commit

            async def timed_getmany(*args):
                records = await getmany(*args)
                if records and not self.first_fetch:
                    self.first_fetch = time.perf_counter()
                return records

            async def timed_commit(offsets):
                await commit(offsets)
                self.last_commit = time.perf_counter()
            consumer.getmany, consumer.commit = timed_getmany, timed_commit
            return consumer
        return make


def direct_rate(settings: Settings, store: str, data: list[ChunkUpsert], write,
                timings: dict[str, float] | None = None) -> float:
    """Rows per second of the store's own bulk write; with ``timings``, a Qdrant shard's
    ``optimize()`` of those rows is timed into it afterwards."""
    scratch = settings.model_copy(update={"group_prefix": settings.group_prefix + "direct"})
    target = open_store(scratch, store)
    target.ensure_schema(data[0].model_id, len(data[0].vector))
    started = time.perf_counter()
    write(scratch, target, data)
    seconds = time.perf_counter() - started
    if timings is not None and store == "qdrant":
        optimizing = time.perf_counter()
        target.optimize()
        timings["qdrant_optimize_seconds"] = time.perf_counter() - optimizing
    target.drop()
    return len(data) / seconds


def _redis_pipeline(settings: Settings, _store, data: list[ChunkUpsert]) -> None:
    from ragstream.stores.redis import connect_sync
    client = connect_sync(settings)
    keys = settings.keys
    for i in range(0, len(data), PAGE):
        pipe = client.pipeline(transaction=False)
        for c in data[i:i + PAGE]:
            vector = np.asarray(c.vector, dtype=np.float32).tobytes()
            metadata = canonical_metadata(c.metadata)
            pipe.hset(keys.index_chunk_prefix + c.chunk_id, mapping={
                "doc_id": c.doc_id, "doc_version": c.doc_version, "position": c.position,
                "text": c.text, "text_hash": c.text_hash, "model_id": c.model_id,
                "vector": vector, "metadata": metadata})
            pipe.sadd(keys.index_doc_chunks(c.doc_id), c.chunk_id)
            pipe.xadd(keys.index_log, {"op": "upsert", "chunk_id": c.chunk_id,
                                       "doc_id": c.doc_id, "position": c.position,
                                       "text": c.text, "vector": vector, "metadata": metadata})
        pipe.execute()
    client.close()


# the index script's writes for a changed chunk (ragstream.index.store.APPLY_CHANGES), and only
# them; its arguments are packed as the store packs them
_UNGUARDED = """
local p = ARGV[1]
local log = p .. ':index:log'
for i = 2, #ARGV, 10 do
  local cid, doc_id, pos, text, vec, meta =
    ARGV[i + 1], ARGV[i + 2], ARGV[i + 4], ARGV[i + 5], ARGV[i + 8], ARGV[i + 9]
  redis.call('HSET', p .. ':index:chunk:' .. cid, 'doc_id', doc_id, 'doc_version', ARGV[i + 3],
             'position', pos, 'text', text, 'text_hash', ARGV[i + 6], 'model_id', ARGV[i + 7],
             'vector', vec, 'metadata', meta)
  redis.call('SADD', p .. ':index:doc_chunks:' .. doc_id, cid)
  redis.call('XADD', log, '*', 'op', 'upsert', 'chunk_id', cid, 'doc_id', doc_id,
             'position', pos, 'text', text, 'vector', vec, 'metadata', meta)
end
return 0
"""


def _redis_script(settings: Settings, _store, data: list[ChunkUpsert]) -> None:
    from ragstream.index.store import upsert_args
    from ragstream.stores.redis import connect_sync
    client = connect_sync(settings)
    write = client.register_script(_UNGUARDED)
    for i in range(0, len(data), PAGE):
        args: list = [settings.group_prefix]
        for c in data[i:i + PAGE]:
            args += upsert_args(c.chunk_id, c.doc_id, c.doc_version, c.position, c.text,
                                c.text_hash, c.model_id, c.vector, canonical_metadata(c.metadata))
        write(keys=[], args=args)
    client.close()


def _pg_copy(settings: Settings, _store, data: list[ChunkUpsert]) -> None:
    import psycopg
    from psycopg import sql

    from ragstream.vectorstores.pgvector import (CHUNK_COLUMNS, connection_parameters, pgcopy,
                                                 table_name)
    table = table_name(settings.store.name_in(settings, "pgvector"))
    copy_sql = sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
        t=sql.Identifier(table), c=sql.SQL(", ").join(map(sql.Identifier, CHUNK_COLUMNS)))
    with psycopg.connect(**connection_parameters(settings)) as conn:
        for i in range(0, len(data), PAGE):
            with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
                copy.write(pgcopy(enumerate(data[i:i + PAGE]), ordinal=False))


def _edge_upsert(_settings: Settings, store, data: list[ChunkUpsert]) -> None:
    from qdrant_edge import UpdateOperation

    from ragstream.vectorstores.qdrant.edge import edge_point
    from ragstream.vectorstores.qdrant.mapping import chunk_point
    for i in range(0, len(data), PAGE):
        points = [edge_point(chunk_point(c, c.doc_version)) for c in data[i:i + PAGE]]
        with store.shard.lock:
            store.shard.engine.update(UpdateOperation.upsert_points(points))


def main() -> None:
    p = harness.parser(__doc__, "2k rows instead of 10k", "a BEIR folder (default: SciFact)")
    p.add_argument("--store", default="pgvector", choices=("embedded", "pgvector", "qdrant"))
    args = p.parse_args()
    total = 2_000 if args.quick else 10_000
    data = rows(total, args.data or DATA)
    writers = {"embedded": (_redis_pipeline, _redis_script), "pgvector": (_pg_copy,),
               "qdrant": (_edge_upsert,)}[args.store]
    timings: dict[str, float] = {}
    with services(durable=False, batch_max_records=PAGE) as settings:
        settings = settings.model_copy(update={"store": settings.store.model_copy(
            update={"qdrant_optimize_every": 10 * total})})  # no graph build (see above)
        # alternate, so that a burst of load on the shared machine hits both sides alike
        direct: dict[str, list[float]] = {w.__name__.lstrip("_"): [] for w in writers}
        workers = []
        for _ in range(2):
            for w in writers:
                direct[w.__name__.lstrip("_")].append(
                    direct_rate(settings, args.store, data, w, timings))
            workers.append(asyncio.run(worker_rates(settings, args.store, data, "base64")))
        floats, floats_end_to_end = asyncio.run(
            worker_rates(settings, args.store, data, "float"))
    worker, end_to_end = max(workers)
    best = max(max(runs) for runs in direct.values())
    harness.table([("side", "<48"), ("rows/s", ">10.0f")], [
        *((f"direct bulk write ({args.store}, {name})", max(runs))
          for name, runs in direct.items()),
        (f"reindex worker ({args.store}), base64 vectors", worker),
        (f"reindex worker ({args.store}), float-list vectors", floats),
        ("worker end to end (embedded broker), base64", end_to_end),
        ("worker end to end (embedded broker), float lists", floats_end_to_end)])
    harness.report("store_writes", "rows written per second", round(best), round(worker),
                   round(worker / best, 3), "rows/s", store=args.store, rows=total, page=PAGE,
                   documents=len({c.doc_id for c in data}), target_ratio=0.8,
                   vector_encoding="base64",
                   direct_runs={name: [round(r) for r in runs] for name, runs in direct.items()},
                   worker_runs=[round(w) for w, _ in workers],
                   float_vectors_rows_per_s=round(floats),
                   float_vectors_ratio=round(floats / best, 3),
                   end_to_end_rows_per_s=round(end_to_end),
                   end_to_end_ratio=round(end_to_end / best, 3),
                   float_vectors_end_to_end_rows_per_s=round(floats_end_to_end),
                   broker="embedded Tansu, in memory",
                   **{k: round(v, 2) for k, v in timings.items()})


if __name__ == "__main__":
    main()
