"""Contracts: generated docs are current, v1 tolerates additions, the version rule holds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from producers.events import document_upserted
from ragstream.publisher import encode
from schemas import generate
from schemas.catalogue import DecodeError, decode, topic, validate
from schemas.envelope import Envelope

LIMIT = 1024 * 1024


def test_committed_schema_files_match_the_code():
    assert generate.stale_files() == [], "run `python -m schemas.generate` and commit the result"


def test_asyncapi_document_covers_every_topic_and_dead_letter_topic():
    doc = json.loads(generate.ASYNCAPI.read_text())
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"documents.v1", "documents.v1.dlq", "chunks.embedded.v1", "kg.changes.v1",
            "graph.embeddings.v1", "inference.requests.v1", "inference.results.v1"} <= addresses
    for message in doc["components"]["messages"].values():
        name = message["payload"]["$ref"].rsplit("/", 1)[-1]
        assert name in doc["components"]["schemas"]


def test_a_v1_consumer_accepts_unknown_extra_fields():
    raw = json.loads(encode(document_upserted("d", "text", version=3)).value)
    raw["newattribute"] = "from a newer producer"
    raw["data"]["language"] = "en"
    payload = decode(topic("documents.v1"), json.dumps(raw).encode(), LIMIT).data
    assert (payload.doc_id, payload.version, payload.text) == ("d", 3, "text")


def test_a_newer_schema_version_is_rejected_on_a_v1_topic():
    raw = json.loads(encode(document_upserted("d", "text", version=1)).value)
    raw["schemaversion"] = 2
    with pytest.raises(DecodeError) as err:
        decode(topic("documents.v1"), json.dumps(raw).encode(), LIMIT)
    assert err.value.reason == "unsupported_version"
    assert "newer" in err.value.message


def test_an_older_schema_version_is_upcast_through_the_registered_upcasters():
    # A hypothetical documents.v2 whose payload renamed `text` to `body`; v1 events are upcast.
    v1 = topic("documents.v1")
    from schemas.payloads import DocumentUpserted

    class DocumentUpsertedV2(DocumentUpserted):
        body: str = ""

    def v1_to_v2(data: dict) -> dict:
        return data | {"body": data["text"]}

    v2 = replace(v1, name="documents.v2", version=2,
                 events={"ragstream.document.upserted": DocumentUpsertedV2},
                 upcasters={1: v1_to_v2})
    old = document_upserted("d", "hello", version=1)
    assert validate(v2, old).body == "hello"

    without_upcaster = replace(v2, upcasters={})
    with pytest.raises(DecodeError, match="no upcaster from schema version 1"):
        validate(without_upcaster, old)


@pytest.mark.parametrize("subject", ["", "a\x00b", "line\nbreak", "x" * 600])
def test_subjects_that_cannot_be_keys_are_rejected(subject):
    with pytest.raises(ValueError):
        Envelope(type="t", source="s", subject=subject, data={})


def test_hostile_strings_in_payloads_are_data_not_code():
    hostile = "x'}) DETACH DELETE n // `$rm -rf /` \u202e; DROP TABLE documents;--"
    message = encode(document_upserted("doc", hostile, version=1, title=hostile))
    payload = decode(topic("documents.v1"), message.value, LIMIT).data
    assert payload.text == hostile and payload.title == hostile


def test_deep_nesting_is_a_clear_decode_error():
    raw = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with pytest.raises(DecodeError) as err:
        decode(topic("documents.v1"), raw, 10 * LIMIT)
    assert err.value.reason == "invalid_json"
