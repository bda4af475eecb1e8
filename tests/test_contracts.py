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


def _raw(doc_id="d", version=1, subject=None) -> bytes:
    raw = json.loads(encode(document_upserted("d", "text", version=1)).value)
    raw["data"] |= {"doc_id": doc_id, "version": version}
    raw["subject"] = doc_id if subject is None else subject
    return json.dumps(raw).encode()


def test_a_version_beyond_what_every_store_holds_exactly_is_refused():
    docs = topic("documents.v1")
    assert decode(docs, _raw(version=2**53 - 1), LIMIT).data.version == 2**53 - 1
    for version in (2**53, 10**30):
        with pytest.raises(DecodeError) as err:
            decode(docs, _raw(version=version), LIMIT)
        assert err.value.reason == "invalid_payload" and "version" in err.value.message


def test_a_document_id_leaves_room_for_the_chunk_ids_derived_from_it():
    from ragstream.chunking import chunk_id
    from schemas.payloads import ChunkEmbedded

    docs = topic("documents.v1")
    longest = "d" * 496
    assert decode(docs, _raw(doc_id=longest), LIMIT).data.doc_id == longest
    # the last chunk a document may have still has a valid id
    ChunkEmbedded(chunk_id=chunk_id(longest, 1_999_999), doc_id=longest, doc_version=1,
                  position=1_999_999, text="t", text_hash="0" * 64, model_id="m")
    with pytest.raises(DecodeError) as err:
        decode(docs, _raw(doc_id="d" * 497), LIMIT)
    assert err.value.reason == "invalid_payload" and "doc_id" in err.value.message


def test_the_subject_must_be_the_document_it_is_about():
    with pytest.raises(DecodeError) as err:
        decode(topic("documents.v1"), _raw(doc_id="a", subject="b"), LIMIT)
    assert err.value.reason == "subject_mismatch"
    with pytest.raises(DecodeError) as err:  # the publisher's path refuses it too
        validate(topic("documents.v1"), Envelope.model_validate_json(
            _raw(doc_id="a", subject="b")))
    assert err.value.reason == "subject_mismatch"


def test_a_binary_mode_event_decodes_to_the_same_envelope_as_its_structured_form():
    from schemas import cloudevents

    envelope = document_upserted("doc-1", "text", version=4, title="T")
    structured = decode(topic("documents.v1"), *cloudevents.encode(envelope)[:1], LIMIT)
    value, headers = cloudevents.encode(envelope, "binary")
    assert {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_subject"} <= dict(headers).keys()
    binary = decode(topic("documents.v1"), value, LIMIT, headers)
    assert binary == structured and binary.data.text == "text"


@pytest.mark.parametrize("drop, reason", [("ce_source", "invalid_envelope"),
                                          ("ce_specversion", "invalid_envelope")])
def test_a_binary_mode_event_without_a_required_attribute_is_refused(drop, reason):
    from schemas import cloudevents

    value, headers = cloudevents.encode(document_upserted("d", "t", version=1), "binary")
    with pytest.raises(DecodeError) as err:
        decode(topic("documents.v1"), value, LIMIT, [h for h in headers if h[0] != drop])
    assert err.value.reason == reason and drop in err.value.message


def test_binary_mode_data_that_is_not_json_is_refused():
    from schemas import cloudevents

    value, headers = cloudevents.encode(document_upserted("d", "t", version=1), "binary")
    for data, content_type, reason in ((b"{not json", b"application/json", "invalid_json"),
                                       (value, b"text/plain", "unsupported_content_type")):
        with pytest.raises(DecodeError) as err:
            decode(topic("documents.v1"), data, LIMIT,
                   [h for h in headers if h[0] != "content-type"] + [("content-type",
                                                                      content_type)])
        assert err.value.reason == reason


def test_an_inference_request_with_a_number_for_text_is_refused_at_the_contract():
    from testing.inference_requests import request

    raw = json.loads(encode(request("minilm", {"text": ("BYTES", [1], ["hi"])})).value)
    raw["data"]["inputs"][0]["data"] = [3_000_000_000]
    with pytest.raises(DecodeError) as err:
        decode(topic("inference.requests.v1"), json.dumps(raw).encode(), LIMIT)
    assert err.value.reason == "invalid_payload" and "BYTES data must be strings" in str(err.value)


@pytest.mark.parametrize("metadata", [{"a\u0000b": 1}, {"k": "v\u0000"}, {"k" * 257: 1}, {"": 1}])
def test_metadata_keys_and_values_meet_the_text_rules(metadata):
    raw = json.loads(encode(document_upserted("d", "t", version=1)).value)
    raw["data"]["metadata"] = metadata
    with pytest.raises(DecodeError) as err:
        decode(topic("documents.v1"), json.dumps(raw).encode(), LIMIT)
    assert err.value.reason == "invalid_payload" and "metadata" in err.value.message


def _chunk_event(**vector) -> bytes:
    from schemas.catalogue import CHUNK_EMBEDDED
    from schemas.payloads import ChunkEmbedded

    payload = ChunkEmbedded(chunk_id="d#0", doc_id="d", doc_version=1, position=0, text="t",
                            text_hash="0" * 64, model_id="m", **vector)
    return encode(Envelope(type=CHUNK_EMBEDDED, source="test", subject="d",
                           data=payload.model_dump(mode="json"))).value


def test_a_base64_vector_reads_as_the_same_float32_values_as_a_list():
    import base64

    import numpy as np

    from schemas.payloads import vector_fields

    vector = np.array([0.1, -2.5, 3e38, -1e-45, 0.0], dtype=np.float32)
    chunks = topic("chunks.embedded.v1")
    as_list = decode(chunks, _chunk_event(**vector_fields(vector, "float")), LIMIT).data
    raw = _chunk_event(**vector_fields(vector, "base64"))
    as_base64 = decode(chunks, raw, LIMIT).data
    assert as_list.vector_base64 is None and as_base64.vector is None
    assert as_list.embedding().tobytes() == as_base64.embedding().tobytes() == vector.tobytes()
    # the wire holds the standard alphabet, which any base64 decoder reads
    wire = json.loads(raw)["data"]["vector_base64"]
    assert base64.b64decode(wire, validate=True) == vector.astype("<f4").tobytes()
    assert len(raw) < len(_chunk_event(**vector_fields(np.random.default_rng(1).standard_normal(
        384).astype(np.float32), "float"))) / 2


@pytest.mark.parametrize(("text", "why"), [
    ("@@@@", "base64"), ("AAA=", "whole number of float32"), ("AADAfw==", "NaN or Infinity"),
    ("AACAfw==", "NaN or Infinity"), ("AACA/w==", "NaN or Infinity"),
    ("AAAAAAAAwP8=", "NaN or Infinity"), ("", "whole number of float32"),
])
def test_a_base64_vector_that_is_not_finite_float32_values_is_refused(text, why):
    raw = json.loads(_chunk_event())
    raw["data"]["vector_base64"] = text
    with pytest.raises(DecodeError) as err:
        decode(topic("chunks.embedded.v1"), json.dumps(raw).encode(), LIMIT)
    assert err.value.reason == "invalid_payload" and why in err.value.message


def test_a_chunk_with_a_vector_in_both_encodings_is_refused():
    raw = json.loads(_chunk_event(vector=[1.0]))
    raw["data"]["vector_base64"] = "AACAPw=="  # 1.0
    with pytest.raises(DecodeError) as err:
        decode(topic("chunks.embedded.v1"), json.dumps(raw).encode(), LIMIT)
    assert err.value.reason == "invalid_payload" and "two encodings" in err.value.message
