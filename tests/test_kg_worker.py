"""The entity-linking worker end to end over real Tansu and FalkorDB."""

from __future__ import annotations

import json

import pytest

from producers.events import document_deleted, document_upserted
from ragstream.publisher import Publisher, encode
from ragstream.transport.base import OutMessage
from schemas.catalogue import KG_CHANGED
from tests.helpers import Tap, eventually, processed, read_topic, running
from tests.kg_support import (  # noqa: F401  (fixtures)
    assert_consistent, graph, recogniser, snapshot, wait_for_versions,
)
from workers.entity_linking import EntityLinkingWorker

TEXTS = {
    "news-1": "Apple Inc. hired Tim Cook in Cupertino. Cook said Apple would buy Beats.",
    "news-2": "Microsoft and Google competed in Seattle while Satya Nadella spoke to Reuters.",
    "news-3": "Angela Merkel met Emmanuel Macron in Berlin to discuss the European Union.",
}
UPDATED = "Apple Inc. sued Samsung in London. Tim Cook flew to Seoul."
# what news-1 mentions, written by hand: (name, type) -> mentions. Before the update "Apple" and
# "Cook" are short forms of the names before them, so they count as mentions of those
NEWS_1 = {("Apple Inc.", "ORG"): 2, ("Tim Cook", "PER"): 2, ("Cupertino", "LOC"): 1,
          ("Beats", "MISC"): 1}
NEWS_1_UPDATED = {("Apple Inc.", "ORG"): 1, ("Samsung", "ORG"): 1, ("London", "LOC"): 1,
                  ("Tim Cook", "PER"): 1, ("Seoul", "LOC"): 1}


async def kg_changes(settings) -> list[dict]:
    return [json.loads(r.value) for r in await read_topic(settings, "kg.changes.v1", timeout=1.5)]


async def test_replays_and_older_versions_change_nothing(settings, topics, graph, recogniser):
    first = [document_upserted(d, t, version=2) for d, t in TEXTS.items()]
    async with Publisher(settings) as pub:
        await pub.publish(first)
    async with running(EntityLinkingWorker(recogniser=recogniser), settings) as runtime:
        await wait_for_versions(graph, {d: (2, False) for d in TEXTS}, 60)
        await eventually(lambda: _at_least(runtime, 3), 30, message="3 processed")
        before = await snapshot(graph)
        assert before["nodes"]["Entity"] >= 9
        async with Publisher(settings) as pub:  # the same events again, then older versions
            await pub.publish(first + [document_upserted(d, "Nokia in Espoo.", version=1)
                                       for d in TEXTS] + [document_deleted("news-1", version=1)])
        await eventually(lambda: _at_least(runtime, 10), 30, message="10 processed")
        assert await snapshot(graph) == before
    await assert_consistent(graph)

    changes = await kg_changes(settings)
    assert {c["type"] for c in changes} == {KG_CHANGED}
    # one event per applied document; the replays re-publish the same ids, older ones nothing
    assert len({c["id"] for c in changes}) == 3
    assert {c["data"]["doc_id"] for c in changes} == set(TEXTS)


async def _at_least(runtime, n: int) -> bool:
    return processed(runtime, "documents.v1") >= n


async def test_update_and_delete_adjust_mentions_and_weights(settings, topics, graph, recogniser):
    async with Publisher(settings) as pub:
        await pub.publish([document_upserted(d, t, version=1) for d, t in TEXTS.items()])
    async with running(EntityLinkingWorker(recogniser=recogniser), settings):
        await wait_for_versions(graph, {d: (1, False) for d in TEXTS}, 60)
        assert await _mentioned(graph, "news-1") == NEWS_1
        async with Publisher(settings) as pub:
            await pub.publish([document_upserted("news-1", UPDATED, version=2),
                               document_deleted("news-2", version=2)])
        await wait_for_versions(graph, {"news-1": (2, False), "news-2": (2, True),
                                        "news-3": (1, False)}, 60)

    assert await _mentioned(graph, "news-1") == NEWS_1_UPDATED
    assert await graph.mentions(["news-2"]) == []
    await assert_consistent(graph)  # every weight equals the live documents' co-occurrences

    changes = {(c["data"]["doc_id"], c["data"]["doc_version"]): c["data"]
               for c in await kg_changes(settings)}
    update = changes[("news-1", 2)]
    names = dict(await graph.backend.read(
        "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id, [e.name, e.type]",
        {"ids": update["entities"]}))
    # dropped entities are dirty too: the old mentions and the new ones
    assert sorted(tuple(names[e]) for e in update["entities"]) == sorted(NEWS_1 | NEWS_1_UPDATED)
    assert changes[("news-2", 2)]["deleted"] is True


async def _mentioned(graph, doc_id: str) -> dict[tuple[str, str], int]:
    rows = await graph.backend.read(
        "MATCH (:Document {id: $doc})-[m:MENTIONS]->(e:Entity) RETURN e.name, e.type, m.count",
        {"doc": doc_id})
    return {(name, kind): count for name, kind, count in rows}


async def test_a_document_with_nul_bytes_is_dead_lettered_and_its_batch_mates_linked(
        settings, topics, graph, recogniser):
    """The contract forbids NUL in a document's text (FalkorDB cannot take it in a parameter,
    and every consumer must agree on the event): the publisher refuses it, and one sent raw
    goes to the DLQ with the reason while the documents around it are linked."""
    clean = encode(document_upserted("nul-doc", "Angela Merkel met Emmanuel Macron.", version=1))
    poisoned = OutMessage(clean.topic, clean.key,
                          clean.value.replace(b"Angela Merkel", b"Angela\\u0000Merkel"),
                          clean.headers)
    with pytest.raises(ValueError, match="text"):  # the event cannot even be built
        document_upserted("nul-doc", "Angela\x00Merkel", version=1)
    async with Publisher(settings) as pub:
        await pub.publish([document_upserted("news-2", TEXTS["news-2"], version=1)])
        await pub.send_raw([poisoned])
        await pub.publish([document_upserted("news-3", TEXTS["news-3"], version=1)])
    dlq = Tap(settings, "documents.v1.dlq")
    async with running(EntityLinkingWorker(recogniser=recogniser), settings):
        await wait_for_versions(graph, {"news-2": (1, False), "news-3": (1, False)}, 60)
        dead = await dlq.read(timeout=2.0)
    assert [r.value for r in dead] == [poisoned.value]
    headers = dict(dead[0].headers)
    assert headers["x-stage"] == b"decode" and b"text" in headers["x-error-message"]
    rows = await graph.backend.read("MATCH (d:Document {id: 'nul-doc'}) RETURN d.id", {})
    assert rows == []


async def test_a_document_the_index_refuses_for_its_chunks_is_refused_alike(
        settings, topics, graph, recogniser):
    """The embedding worker dead-letters a document over the chunk limit (too_many_chunks); the
    graph used to link it anyway (a 200k-word paragraph: 81 s and 3.4 GB of NER, 20,000
    entities of a document search never had). Here the limit is 2 chunks of 240 word pieces."""
    settings = settings.model_copy(update={"max_chunks_per_document": 2})
    long_text = TEXTS["news-3"] + " " + " ".join(["Merkel spoke in Berlin again."] * 150)
    async with Publisher(settings) as pub:
        await pub.publish([document_upserted("long", long_text, version=1),
                           document_upserted("grow", TEXTS["news-1"], version=1),
                           document_upserted("grow", long_text, version=2),
                           document_upserted("news-3", TEXTS["news-3"], version=1)])
    dlq = Tap(settings, "documents.v1.dlq")
    async with running(EntityLinkingWorker(recogniser=recogniser), settings):
        await wait_for_versions(graph, {"news-3": (1, False), "grow": (1, False)}, 60)
        dead: list = []

        async def two() -> bool:
            dead[:] = await dlq.read(timeout=0.5)
            return len(dead) >= 2
        await eventually(two, 30, message="two dead letters")
    got = sorted((json.loads(r.value)["subject"], json.loads(r.value)["data"]["version"],
                  dict(r.headers)["x-error-reason"]) for r in dead)
    assert got == [("grow", 2, b"too_many_chunks"), ("long", 1, b"too_many_chunks")]
    assert await graph.backend.read("MATCH (d:Document {id: 'long'}) RETURN d.id", {}) == []
    await assert_consistent(graph)
