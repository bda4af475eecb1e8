"""GraphStore on a real FalkorDB: parameters only, atomic version checks, weights; and the thin
Neo4j adapter's calls, checked against a recording driver (no Neo4j server can run here)."""

from __future__ import annotations

import pytest

from ragstream.config import Settings
from ragstream.graph import GraphConflict, GraphStore, KgSettings, open_backend
from ragstream.graph import cypher
from ragstream.graph.backends import FalkorBackend, Neo4jBackend
from ragstream.graph.dialect import NEO4J_CONSTRAINTS
from ragstream.graph.model import DocumentChange, LinkedEntity, cooccurring
from ragstream.errors import SinkUnavailable
from tests.kg_support import assert_consistent, graph, snapshot  # noqa: F401  (fixture)

HOSTILE = [
    "x'}) DETACH DELETE n //",
    'x"}) MATCH (n) DETACH DELETE n RETURN 1 //',
    "`Entity` `; DROP",
    "$rows $id {id: $x}",
    "line one\nline two\r\n\ttab",
    "back\\slash \\' \\\" end\\",
    "Ünïcödé ☃ 北京 \u200b",
    "CYPHER rows=1 MATCH (n) DELETE n",
    "z" * 10_000,
    "control \x01\x07\x1b\x1f\x7f and \\u0041 spelled out",
    'json-ish {"id": "x"}: [1, 2]',
]


def entity(id_: str, name: str, type_: str = "ORG", spans=((0, 1),)) -> LinkedEntity:
    return LinkedEntity(id_, name, type_, (name,), tuple(spans))


async def upsert(store: GraphStore, doc: str, version: int, entities: list[LinkedEntity]):
    base = (await store.document_states([doc])).get(doc)
    change = DocumentChange(doc, version, False, base, tuple(entities),
                            cooccurring(tuple(entities), 50))
    await store.apply([change])
    await store.tidy(set(change.old_pairs) - set(change.new_pairs),
                     set(base.entities if base else ()) - {e.id for e in entities})


async def delete(store: GraphStore, doc: str, version: int):
    base = (await store.document_states([doc])).get(doc)
    change = DocumentChange(doc, version, True, base)
    await store.apply([change])
    await store.tidy(change.old_pairs, base.entities if base else ())


async def test_hostile_names_are_stored_verbatim_and_delete_nothing(graph):
    await upsert(graph, "sentinel", 1, [entity("keep-a", "Keep A"), entity("keep-b", "Keep B")])
    hostile = [entity(f"h{i}", name) for i, name in enumerate(HOSTILE)]
    await upsert(graph, "hostile-doc \n'}) //", 1, hostile)

    rows = await graph.backend.read(
        "MATCH (e:Entity) RETURN e.id, e.name, e.aliases ORDER BY e.id", {})
    stored = {id_: (name, aliases) for id_, name, aliases in rows}
    for i, name in enumerate(HOSTILE):
        assert stored[f"h{i}"] == (name, [name])
    assert {"keep-a", "keep-b"} <= stored.keys()
    counts = await graph.counts()
    assert counts.nodes == {"Document": 2, "Entity": 2 + len(HOSTILE)}
    assert counts.edges["MENTIONS"] == 2 + len(HOSTILE)
    # the hostile names round-trip as parameters of reads too
    for i, name in enumerate(HOSTILE):
        hit = await graph.backend.read("MATCH (e:Entity {name: $n}) RETURN e.id", {"n": name})
        assert hit == [[f"h{i}"]]
    await assert_consistent(graph)


async def test_stale_base_is_a_conflict_and_writes_nothing(graph):
    await upsert(graph, "d", 1, [entity("a", "A"), entity("b", "B")])
    before = await graph.counts()
    stale = DocumentChange("d", 2, False, None, (entity("c", "C"),), ("c",))
    with pytest.raises(GraphConflict):
        await graph.apply([stale])
    assert await graph.counts() == before


async def test_a_batch_with_one_stale_document_writes_nothing(graph):
    await upsert(graph, "d1", 1, [entity("a", "A"), entity("b", "B")])
    before = await snapshot(graph)
    fresh = DocumentChange("d2", 1, False, None, (entity("c", "C"), entity("a", "A")), ("a", "c"))
    stale = DocumentChange("d1", 2, False, None, (entity("b", "B"),), ("b",))
    with pytest.raises(GraphConflict, match="d1"):
        await graph.apply([fresh, stale])
    assert await snapshot(graph) == before  # all or nothing: d2 is not half written
    await graph.apply([fresh])  # the retry, after re-reading, applies it
    assert (await graph.document_states(["d2"]))["d2"].version == 1
    await assert_consistent(graph)


async def test_one_batch_aggregates_shared_entities_and_pairs(graph):
    """Several documents of one batch share entities and pairs: every increment counts and each
    entity gets the surfaces of all of them."""
    a, b = entity("a", "A"), entity("b", "B")
    a2 = LinkedEntity("a", "A", "ORG", ("A Corp",), ((0, 6),))
    changes = [DocumentChange(f"d{i}", 1, False, None, (a2 if i == 2 else a, b), ("a", "b"))
               for i in range(3)]
    await graph.apply(changes)
    assert await graph.cooccurrence() == [("a", "b", 3)]
    aliases = await graph.backend.read("MATCH (e:Entity {id: 'a'}) RETURN e.aliases", {})
    assert sorted(aliases[0][0]) == ["A", "A Corp"]
    # the next batch drops the pair from two documents and the edge from the third
    base = await graph.document_states(["d0", "d1", "d2"])
    await graph.apply([DocumentChange(d, 2, False, base[d], (a,), ("a",)) for d in ("d0", "d1")])
    assert await graph.cooccurrence() == [("a", "b", 1)]
    base = await graph.document_states(["d2"])
    await graph.apply([DocumentChange("d2", 2, True, base["d2"])])
    assert await graph.cooccurrence() == []  # weight 0: dropped by the same query
    await assert_consistent(graph)


async def test_nul_bytes_become_replacement_characters(graph):
    """FalkorDB rejects NUL in any string; the store replaces it deliberately, so a name with a
    stray NUL is written instead of failing its whole batch."""
    nul = LinkedEntity("n", "Acme\x00Corp", "ORG", ("Acme\x00Corp", "\x00"), ((0, 9),),
                       context="before \x00 after")
    await upsert(graph, "d", 1, [nul, entity("k", "Keep")])
    rows = await graph.backend.read(
        "MATCH (d:Document)-[m:MENTIONS]->(e:Entity {id: 'n'}) "
        "RETURN e.name, e.aliases, e.context, m.surfaces", {})
    assert rows == [["Acme\ufffdCorp", ["Acme\ufffdCorp", "\ufffd"], "before \ufffd after",
                     ["Acme\ufffdCorp", "\ufffd"]]]
    assert (await graph.counts()).edges["MENTIONS"] == 2


async def test_update_and_delete_move_weights(graph):
    a, b, c = entity("a", "A"), entity("b", "B"), entity("c", "C")
    await upsert(graph, "d1", 1, [a, b, c])
    await upsert(graph, "d2", 1, [a, b])
    assert await graph.cooccurrence() == [("a", "b", 2), ("a", "c", 1), ("b", "c", 1)]

    await upsert(graph, "d1", 2, [a, c])  # d1 drops b
    assert await graph.cooccurrence() == [("a", "b", 1), ("a", "c", 1)]
    mentions = await graph.mentions(["d1"])
    assert sorted(e for _, e, _ in mentions) == ["a", "c"]

    await delete(graph, "d2", 2)
    assert await graph.cooccurrence() == [("a", "c", 1)]
    assert await graph.mentions(["d2"]) == []
    states = await graph.document_states(["d2"])
    assert (states["d2"].version, states["d2"].deleted) == (2, True)  # the tombstone stays
    await assert_consistent(graph)


async def test_orphans_are_kept_or_pruned_by_policy(graph):
    await upsert(graph, "d", 1, [entity("a", "A"), entity("b", "B")])
    await delete(graph, "d", 2)
    assert (await graph.counts()).nodes["Entity"] == 2  # default policy: keep
    graph.orphans = "prune"
    await upsert(graph, "d", 3, [entity("a", "A")])
    await delete(graph, "d", 4)
    # pruning touches only what a change dropped: "a" goes, "b" (orphaned under "keep") stays
    assert await graph.backend.read("MATCH (e:Entity) RETURN e.id", {}) == [["b"]]


async def test_spans_and_link_audit_are_recorded(graph):
    linked = LinkedEntity("p", "Steve Jobs", "PER", ("Jobs", "Steve Jobs"), ((0, 10), (20, 24)),
                          method="coref")
    await upsert(graph, "d", 1, [linked])
    assert await graph.links("p") == [{"doc": "d", "surfaces": ["Jobs", "Steve Jobs"],
                                       "method": "coref", "score": None,
                                       "spans": ["0:10", "20:24"]}]


def test_backend_follows_the_settings(falkordb):
    falkor = open_backend(Settings(redis_url=falkordb.url, group_prefix="gp"), KgSettings())
    assert isinstance(falkor, FalkorBackend) and falkor.graph_name == "gp.kg"
    neo = open_backend(Settings(neo4j_uri="bolt://127.0.0.1:7687", neo4j_password="pw"),
                       KgSettings())
    assert isinstance(neo, Neo4jBackend)


# Neo4j adapter: a recording driver stands in for the server ---------------------------------


class RecordingDriver:
    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, str, dict, str | None]] = []
        self.fail = fail

    def session(self, database=None):
        return RecordingSession(self, database)

    async def close(self):
        pass


class RecordingSession:
    def __init__(self, driver: RecordingDriver, database: str | None):
        self.driver, self.database, self.mode = driver, database, None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def execute_write(self, work):
        return await self._execute("write", work)

    async def execute_read(self, work):
        return await self._execute("read", work)

    async def _execute(self, mode, work):
        if self.driver.fail:
            raise self.driver.fail
        session = self

        class Tx:
            async def run(self, query, params):
                session.driver.calls.append((mode, query, params, session.database))
                return RecordingResult([[[]]])  # APPLY_DOCUMENTS: no conflicts

        return await work(Tx())


class RecordingResult:
    def __init__(self, rows):
        self.rows = rows

    def __aiter__(self):
        async def gen():
            for row in self.rows:
                yield type("Record", (), {"values": lambda self, r=row: r})()
        return gen()


async def test_neo4j_adapter_creates_constraints_and_passes_parameters_untouched():
    driver = RecordingDriver()
    store = GraphStore(Neo4jBackend("bolt://x", "neo4j", "pw", "kg", driver=driver))
    await store.setup()
    assert [q for _, q, _, _ in driver.calls] == list(NEO4J_CONSTRAINTS)

    driver.calls.clear()
    hostile = entity("e1", HOSTILE[0])
    await store.apply([DocumentChange("doc-1", 1, False, None, (hostile,), ("e1",))])
    mode, query, params, database = driver.calls[0]
    assert (mode, query, database) == ("write", cypher.APPLY_DOCUMENTS, "kg")
    doc, ent, mention = params["docs"][0], params["entities"][0], params["mentions"][0]
    assert (doc[0], doc[3]) == ("doc-1", -1)  # the base version travels for the atomic check
    assert ent[:2] == ["e1", HOSTILE[0]]
    assert mention[:2] == ["doc-1", "e1"] and mention[4] == [HOSTILE[0]]
    assert HOSTILE[0] not in query

    driver.calls.clear()
    await store.set_embeddings({"e1": [0.5, 0.25]})
    assert "db.create.setNodeVectorProperty" in driver.calls[0][1]
    assert driver.calls[0][2] == {"rows": [{"id": "e1", "vector": [0.5, 0.25]}]}


async def test_neo4j_unreachable_is_backpressure():
    import neo4j.exceptions

    store = GraphStore(Neo4jBackend("bolt://x", "neo4j", "pw", driver=RecordingDriver(
        fail=neo4j.exceptions.ServiceUnavailable("no route"))))
    with pytest.raises(SinkUnavailable):
        await store.document_states(["d"])
