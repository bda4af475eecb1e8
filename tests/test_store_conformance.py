"""One conformance suite that every store backend passes (ragstream/vectorstores/base.py states
the contract). Each backend runs against the real thing: the embedded index on FalkorDB's Redis,
PostgreSQL with the pgvector extension (infra/pgvector/install.sh), and the Qdrant engine
embedded through qdrant-edge-py. A backend whose service is missing fails here; nothing skips."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from producers.events import document_deleted, document_upserted
from ragstream.config import Settings
from ragstream.publisher import Publisher
from ragstream.vectorstores import open_store
from ragstream.vectorstores.base import Counts, DocumentDelete, Filter
from ragstream.vectorstores.search import FusionWeights, Searcher
from tests.helpers import eventually, metric, running
from testing.proxy import CuttableProxy
from tests.store_support import sha, unit, upsert
from workers.embedding import EmbeddingWorker
from workers.reindex import PgvectorReindexWorker, ReindexWorker

BACKENDS = ("embedded", "pgvector", "qdrant")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, env):
    """Stores of this test's namespace; every one opened is dropped at the end."""
    opened = []

    def make(model: str = "test-model", dimension: int = 8, **overrides):
        store = open_store(Settings.from_env(env, store_search=backend, **overrides), backend)
        store.ensure_schema(model, dimension)
        opened.append(store)
        return store

    yield make
    opened[0].drop()
    for store in opened[1:]:
        store.close()


def content(store) -> dict[str, tuple[str, int, int]]:
    """chunk id -> (text hash, position, the document's applied version)."""
    return {c.chunk_id: (c.text_hash, c.position, c.doc_version) for c in store.scan(None, 10_000)}


def test_a_replay_changes_nothing(make_store):
    store = make_store()
    batch = [upsert("a#0", 1, "alpha one"), upsert("a#1", 1, "alpha two"),
             upsert("b#0", 1, "beta"), DocumentDelete("b", 1, ["b#9"])]
    assert store.apply(batch) == [1, 1, 1, 0]
    digest, generation = store.digest(), store.generation()
    assert store.apply(batch) == [0, 0, 0, 0]
    assert store.apply(batch[::-1]) == [0, 0, 0, 0]
    assert (store.digest(), store.generation()) == (digest, generation)
    assert store.counts() == Counts(documents=2, chunks=3)


def test_an_older_version_is_ignored(make_store):
    store = make_store()
    assert store.apply([upsert("a#0", 2, "second text"), upsert("a#1", 2, "more")]) == [1, 1]
    assert store.apply([upsert("a#0", 1, "first text")]) == [0]
    assert store.apply([DocumentDelete("a", 1, all_chunks=True)]) == [0]
    assert store.apply([DocumentDelete("a", 1, ["a#1"])]) == [0]
    assert content(store) == {"a#0": (sha("second text"), 0, 2), "a#1": (sha("more"), 1, 2)}
    # the same version may still add a chunk (a version's chunks can span batches)
    assert store.apply([upsert("a#2", 2, "last")]) == [1]


def test_a_delete_removes_every_chunk_and_an_older_replay_stays_out(make_store):
    store = make_store()
    store.apply([upsert(f"a#{i}", 1, f"alpha part {i}") for i in range(3)]
                + [upsert("b#0", 1, "beta part")])
    assert store.apply([DocumentDelete("a", 2, all_chunks=True)]) == [3]
    assert store.counts() == Counts(documents=1, chunks=1)
    found = store.candidates(unit(1), "alpha part", 10)
    assert {c.doc_id for c in found.chunks.values()} == {"b"}
    assert store.apply([upsert("a#0", 1, "alpha part 0")]) == [0]  # replayed from before
    assert store.apply([upsert("a#0", 3, "alpha again")]) == [1]  # re-created later
    assert set(content(store)) == {"a#0", "b#0"}


def test_an_update_of_one_paragraph_changes_only_its_chunk(make_store):
    store = make_store()
    store.apply([upsert("a#0", 1, "intro"), upsert("a#1", 1, "para two"),
                 upsert("a#2", 1, "para three")])
    before, generation = content(store), store.generation()
    assert store.apply([upsert("a#1", 2, "para two, revised")]) == [1]
    after = content(store)
    assert after["a#1"] == (sha("para two, revised"), 1, 2)
    assert {c: v[:2] for c, v in after.items() if c != "a#1"} == {
        "a#0": (sha("intro"), 0), "a#2": (sha("para three"), 2)}
    assert all(v[2] == 2 for v in after.values())  # the document's applied version
    assert store.generation() != generation
    assert store.apply([DocumentDelete("a", 3, ["a#2"])]) == [1]  # a paragraph removed
    assert set(content(store)) == {"a#0", "a#1"}
    assert before.keys() != content(store).keys()


def test_metadata_is_kept_and_filters_search(make_store):
    store = make_store()
    store.apply([
        upsert("a#0", 1, "solar panels on roofs", unit(1, 0), {"lang": "en", "year": 2020}),
        upsert("b#0", 1, "solar farms in deserts", unit(1, 0.1), {"lang": "de", "flag": True}),
        upsert("c#0", 1, "wind farms at sea", unit(0, 1), {"lang": "en", "flag": 1})])
    query = unit(1, 0.05)

    def ids(where):
        found = store.candidates(query, "solar farms", 10, where)
        return set(found.dense), set(found.sparse)

    assert ids(Filter()) == ({"a#0", "b#0", "c#0"}, {"a#0", "b#0", "c#0"})
    assert ids(Filter(metadata={"lang": "en"})) == ({"a#0", "c#0"}, {"a#0", "c#0"})
    assert ids(Filter(doc_ids=frozenset({"b"}))) == ({"b#0"}, {"b#0"})
    assert ids(Filter(metadata={"year": 2020.0})) == ({"a#0"}, {"a#0"})
    # JSON's true is not 1, either way round
    assert ids(Filter(metadata={"flag": True})) == ({"b#0"}, {"b#0"})
    assert ids(Filter(metadata={"flag": 1})) == ({"c#0"}, {"c#0"})
    assert ids(Filter(metadata={"missing": None})) == (set(), set())
    found = store.candidates(query, None, 1, Filter(doc_ids=frozenset({"a"})))
    assert dict(found.chunks["a#0"].metadata) == {"lang": "en", "year": 2020}
    # a metadata change alone is a change
    assert store.apply([upsert("a#0", 2, "solar panels on roofs", unit(1, 0), {"lang": "fr"})]) \
        == [1]
    assert ids(Filter(metadata={"lang": "fr"}))[0] == {"a#0"}


FISH = ("Zebrafish regenerate heart muscle after injury: cardiomyocytes dedifferentiate and "
        "proliferate to replace the lost tissue within weeks.")
CORPUS = {
    "fish#0": FISH,
    "plants#0": "Photosynthesis in plant leaves turns sunlight, water and carbon dioxide into "
                "sugar and oxygen inside the chloroplasts.",
    "climate#0": "Rising ocean temperatures bleach coral reefs, and the algae that feed the "
                 "corals leave their tissue.",
    "code#0": "A hash table maps keys to buckets; collisions are resolved by chaining or by "
              "open addressing with probing.",
}


def test_hybrid_search_fuses_both_rankings(make_store, minilm, env, backend):
    store = make_store(minilm.model_id, minilm.dimension)
    vectors = minilm.embed(list(CORPUS.values()))
    store.apply([upsert(c, 1, t, v, model=minilm.model_id)
                 for (c, t), v in zip(CORPUS.items(), vectors, strict=True)])
    searcher = Searcher(Settings.from_env(env), minilm, store)
    hits = searcher.search("zebrafish heart regeneration", k=3)
    assert (hits[0].chunk_id, hits[0].dense_rank, hits[0].sparse_rank) == ("fish#0", 1, 1)
    assert hits[0].text == FISH and hits[0].doc_id == "fish" and hits[0].position == 0
    # a paraphrase with no word in common: only the dense ranking finds it
    dense = searcher.search("how do green leaves make food from light", k=1,
                            weights=FusionWeights(dense=1, sparse=0))
    assert dense[0].chunk_id == "plants#0" and dense[0].sparse_rank is None
    # a rare word: the keyword ranking puts the one chunk holding it first
    sparse = searcher.search("collisions", k=4, weights=FusionWeights(dense=0, sparse=1))
    assert [h.chunk_id for h in sparse] == ["code#0"]
    scores = [h.score for h in searcher.search("coral reef bleaching", k=4)]
    assert scores == sorted(scores, reverse=True)


def test_two_writers_at_once_end_in_the_newest_state(make_store):
    """Two writers (two stores, two connections) apply every version of 30 documents at once,
    each in its own shuffled order, as two reindex workers do around a rebalance."""
    writers = [make_store(), make_store()]
    batches = []
    for doc in range(30):
        for version in range(1, 6):
            if version == 4 and doc % 3 == 0:
                batches.append([DocumentDelete(f"d{doc}", version, all_chunks=True)])
            else:
                batches.append([upsert(f"d{doc}#{p}", version, f"d{doc} v{version} p{p}")
                                for p in range(3)])
    errors = []

    def write(store, seed: int) -> None:
        order = batches[:]
        random.Random(seed).shuffle(order)
        try:
            for i in range(0, len(order), 7):
                store.apply([op for batch in order[i:i + 7] for op in batch])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, seed)) for seed, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    expected = {f"d{doc}#{p}": (sha(f"d{doc} v5 p{p}"), p, 5) for doc in range(30)
                for p in range(3)}
    assert content(writers[0]) == expected
    assert writers[0].counts() == Counts(documents=30, chunks=90)
    assert writers[0].digest() == writers[1].digest()


def dead_letters(runtime) -> list:
    return [s for m in runtime.metrics.registry.collect() for s in m.samples
            if s.name == "ragstream_events_dead_lettered_total" and s.value > 0]


# The embedded Qdrant engine lives inside the worker's process: it cannot be down apart from it.
# A Qdrant server's outage goes through the same runtime path, but no server runs here.
@pytest.mark.parametrize("backend", ["embedded", "pgvector"])
async def test_a_store_down_for_20_s_holds_the_worker_back_and_loses_nothing(
        backend, env, settings, topics, minilm):
    direct = Settings.from_env(env, store_search=backend, store_fresh=backend)
    if backend == "embedded":
        host, port = "127.0.0.1", int(direct.redis_url.get_secret_value().rsplit(":", 1)[1]
                                      .split("/")[0])
    else:
        host, port = "127.0.0.1", 5432
    proxy = CuttableProxy(host, port)
    await proxy.start()
    through = (dict(redis_url=f"redis://127.0.0.1:{proxy.port}/0") if backend == "embedded"
               else dict(store_pgvector_dsn=direct.store.pgvector_dsn.get_secret_value()
                         .replace(":5432/", f":{proxy.port}/")))
    cut = Settings.from_env(env, store_search=backend, store_fresh=backend, **through)
    assert backend == "embedded" or f":{proxy.port}/" in cut.store.pgvector_dsn.get_secret_value()
    worker = ReindexWorker() if backend == "embedded" else PgvectorReindexWorker()
    docs = {f"doc{i}": f"Report {i}: the committee met on day {i} and agreed on item {i * 7}."
            for i in range(24)}
    store = open_store(direct, backend)
    try:
        async with running(EmbeddingWorker(minilm), direct), running(worker, cut) as reindex:
            async with Publisher(direct) as pub:
                await pub.publish(document_upserted(d, t, version=1)
                                  for d, t in list(docs.items())[:12])

            async def counted(n: int) -> bool:
                return (await asyncio.to_thread(store.counts)).documents == n
            await eventually(lambda: counted(12), 60, message="first half stored")

            await proxy.cut()
            async with Publisher(direct) as pub:
                await pub.publish(document_upserted(d, t, version=1)
                                  for d, t in list(docs.items())[12:])
                await pub.publish([document_deleted("doc0", version=2)])
            await asyncio.sleep(20)
            assert (await asyncio.to_thread(store.counts)).documents == 12  # nothing got through
            paused = metric(reindex, "ragstream_backpressure_pauses_total", worker=worker.name)
            assert paused >= 1
            await proxy.restore()
            await eventually(lambda: counted(23), 60, message="the rest stored after the outage")
            assert not dead_letters(reindex)  # an outage is backpressure, never a dead letter
        assert {c.doc_id for c in store.scan(None, 1000)} == set(docs) - {"doc0"}
    finally:
        store.drop()
        await proxy.cut()


@pytest.mark.parametrize("target_name", ["pgvector", "qdrant"])
def test_a_backfill_copies_every_chunk_resumes_and_never_overwrites_a_newer_write(env, target_name):
    from ragstream.vectorstores.backfill import backfill

    settings = Settings.from_env(env)
    source, target = open_store(settings, "embedded"), open_store(settings, target_name)
    try:
        source.ensure_schema("test-model", 8)
        source.apply([upsert(f"d{d}#{p}", 2, f"d{d} p{p}") for d in range(5) for p in range(2)])
        source.apply([upsert("d0#0", 3, "d0 newer")])  # version 3 changed one paragraph
        target.ensure_schema("test-model", 8)
        # the target's own worker has applied that change already, and a newer one of d1
        target.apply([upsert("d0#0", 3, "d0 newer"), upsert("d1#0", 4, "d1 newest")])

        class Interrupted(Exception):
            pass

        def stop_after_first_page(progress):
            if progress.copied == 3:
                raise Interrupted
        with pytest.raises(Interrupted):
            backfill(settings, "embedded", target_name, page=3, progress=stop_after_first_page)
        # d0#1 came at d0's applied version (3): a chunk unchanged since version 2 still lands
        assert set(content(target)) == {"d0#0", "d0#1", "d1#0"}
        done = backfill(settings, "embedded", target_name, page=3)
        assert (done.copied, done.changed, done.total) == (7, 6, 10)  # resumed after page one
        copied, expected = content(target), content(source)
        # the target's newer d1 stays; d1#1 comes once the source has caught up and it reruns
        assert copied.pop("d1#0") == (sha("d1 newest"), 0, 4)
        del expected["d1#0"], expected["d1#1"]
        assert copied == expected
        assert backfill(settings, "embedded", target_name).changed == 0
    finally:
        source.drop()
        target.drop()
