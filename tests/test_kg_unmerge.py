"""Auditing and undoing an entity merge, in the store and through ``ragstream graph``, on a real
FalkorDB: the graph stays consistent, and no later resolution makes the merge again."""

from __future__ import annotations

import json

from ragstream.graph.model import DocumentChange, cooccurring
from ragstream.nlp.gazetteer import Gazetteer
from ragstream.nlp.recognise import Mention
from ragstream.nlp.resolve import Resolver
from tests.kg_support import assert_consistent, graph  # noqa: F401  (fixture)
from tests.helpers import read_topic
from tests.test_cli import ragstream

TEXT = "Asher Edelman bid for Dominion Textile. Edelman said Dominion Textile would answer."


def mentions(*spans: tuple[str, str]) -> list[Mention]:
    out, cursor = [], 0
    for surface, cls in spans:
        start = TEXT.index(surface, cursor)
        cursor = start + len(surface)
        out.append(Mention(surface, cls, start, cursor, "", TEXT))
    return out


DOC = mentions(("Asher Edelman", "PER"), ("Dominion Textile", "ORG"), ("Edelman", "MISC"),
               ("Dominion Textile", "ORG"))


async def write(store, doc_id: str, version: int, resolver: Resolver):
    (linked,) = resolver.resolve([DOC])
    base = (await store.document_states([doc_id])).get(doc_id)
    await store.apply([DocumentChange(doc_id, version, False, base, linked,
                                      cooccurring(linked, 50))])
    return linked


async def test_unmerge_moves_the_merged_mentions_and_blocks_the_merge(graph):
    linked = await write(graph, "d", 1, Resolver())
    edelman = next(e for e in linked if e.name == "Asher Edelman")
    assert edelman.method == "coref" and len(edelman.spans) == 2
    assert [m["merged"] for m in await graph.merges()] == [
        [{"start": 40, "end": 47, "cls": "MISC", "surface": "Edelman"}]]
    version = await graph.gazetteer_version()

    result = await graph.unmerge("d", edelman.id)
    assert result["from"] == edelman.id and result["mentions"] == 1
    (bare,) = result["to"]
    by_entity = {e: spans for _, e, spans in await graph.mentions(["d"])}
    assert by_entity[edelman.id] == ["0:13"] and by_entity[bare] == ["40:47"]
    aliases = await graph.backend.read("MATCH (e:Entity {id: $id}) RETURN e.aliases",
                                       {"id": edelman.id})
    assert aliases == [[["Asher Edelman"]]]  # the surface left with its mentions
    assert await graph.merges() == []
    assert (await graph.document_states(["d"]))["d"].version == 1
    await assert_consistent(graph)  # entity lists and co-occurrence weights moved with it
    assert await graph.cooccurrence() == sorted(
        tuple(sorted(p)) + (1,) for p in [(edelman.id, bare), (edelman.id, _dominion(linked)),
                                          (bare, _dominion(linked))])
    assert await graph.gazetteer_version() == version + 1  # workers reload the block list

    # a new version of the document is resolved again: the undone merge is not made again
    blocked = await graph.blocked_merges()
    assert blocked == {(bare, edelman.id)}
    again = await write(graph, "d", 2, Resolver(Gazetteer(blocked=blocked)))
    assert {e.id for e in again} == {edelman.id, bare, _dominion(linked)}
    await assert_consistent(graph)


def _dominion(linked) -> str:
    return next(e.id for e in linked if e.name == "Dominion Textile")


async def test_graph_cli_lists_merges_and_unmerges_one(env, settings, topics, graph):
    linked = await write(graph, "d", 1, Resolver())
    edelman = next(e for e in linked if e.name == "Asher Edelman")
    listed = ragstream("graph", "merges", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["doc"], row["entity"], row["method"]) == ("d", edelman.id, "coref")

    wrong = ragstream("graph", "unmerge", "d", edelman.id, "--surface", "Asher", env=env)
    assert wrong.returncode == 1 and "nothing" in wrong.stdout + wrong.stderr
    done = ragstream("graph", "unmerge", "d", edelman.id, "--surface", "Edelman", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["surfaces"] == ["Edelman"]
    # the GCN hears of it: every entity and edge the document had or has now
    (record,) = await read_topic(settings, "kg.changes.v1", timeout=1)
    change = json.loads(record.value)["data"]
    (bare,) = result["to"]
    dominion = _dominion(linked)
    assert change["entities"] == sorted([edelman.id, bare, dominion])
    assert sorted(map(tuple, change["edges"])) == sorted(
        tuple(sorted(p)) for p in [(edelman.id, dominion), (edelman.id, bare), (bare, dominion)])
    again = ragstream("graph", "unmerge", "d", edelman.id, env=env)
    assert again.returncode == 1
    stats = json.loads(ragstream("graph", "stats", env=env).stdout)
    assert stats["nodes"] == {"Document": 1, "Entity": 3, "Unmerge": 1, "Meta": 1}
    await assert_consistent(graph)
