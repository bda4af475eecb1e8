"""The command line as a user runs it: real processes against real services."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from producers.events import document_upserted
from ragstream.stack import free_port
from testing.cross_encoder import build_standin
from tests.helpers import read_topic


def ragstream(*args: str, env: dict[str, str], stdin: str | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragstream", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **env})


async def test_publish_sends_valid_lines_and_reports_invalid_ones(env, settings, topics):
    good = [document_upserted(f"d{i}", "text", version=1).model_dump_json() for i in range(3)]
    lines = [good[0], "{not json", good[1], json.dumps({"type": "ragstream.document.upserted"}),
             good[2]]
    result = ragstream("publish", env=env, stdin="\n".join(lines))
    assert result.returncode == 1
    assert "line 2" in result.stderr and "line 4" in result.stderr
    assert "published 3, rejected 2" in result.stderr
    records = await read_topic(settings, "documents.v1", timeout=1)
    assert sorted(json.loads(r.value)["subject"] for r in records) == ["d0", "d1", "d2"]


async def test_backfill_a_folder_resumes_from_its_checkpoint(env, settings, topics, tmp_path):
    folder = tmp_path / "docs"
    for i in range(1200):
        (folder / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"part{i % 3}" / f"{i}.txt").write_text(f"document number {i}")
    first = ragstream("backfill", str(folder), env=env)
    assert first.returncode == 0, first.stderr
    assert "published 1200, already done 0" in first.stderr
    again = ragstream("backfill", str(folder), env=env)
    assert "published 0, already done 1200" in again.stderr
    records = await read_topic(settings, "documents.v1", timeout=1)
    assert len(records) == 1200
    ids = {json.loads(r.value)["id"] for r in records}
    redo = ragstream("backfill", str(folder), "--no-resume", env=env)
    assert "published 1200" in redo.stderr
    records = await read_topic(settings, "documents.v1", timeout=1)
    # a re-sent backfill carries the same event ids: downstream it is a replay, not new work
    assert {json.loads(r.value)["id"] for r in records} == ids


@pytest.mark.slow
def test_up_runs_the_stack_serves_the_demo_and_leaves_no_orphans(tmp_path):
    from producers import reuters

    env = {"RAGSTREAM_DATA_DIR": str(tmp_path / "stack")}
    for key in ("RAGSTREAM_KAFKA_BOOTSTRAP", "RAGSTREAM_REDIS_URL"):
        env[key] = ""  # start the embedded services, whatever the caller's environment says
    up = subprocess.Popen([sys.executable, "-m", "ragstream", "up", "--no-live"],
                          env={**os.environ, **env}, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        stack_file = tmp_path / "stack" / "stack.env"
        deadline = time.monotonic() + 120
        while not stack_file.exists():
            assert up.poll() is None and time.monotonic() < deadline, "ragstream up did not start"
            time.sleep(0.2)
        demo = ragstream("demo", "--limit", "25", "--wait", "300", "--query", "oil prices", env={
            "RAGSTREAM_DATA_DIR": env["RAGSTREAM_DATA_DIR"]}, timeout=420)
        assert demo.returncode == 0, demo.stderr
        out = demo.stderr
        assert "25/25 results" in out
        progress = out.splitlines()
        final = [line for line in progress if "receipts 25/25" in line][-1]
        # every document's chunks searchable, every document linked, the GCN rewritten
        assert re.search(r"chunks (\d+) embedded, \1 searchable \(25/25 docs\)", final), final
        assert re.search(r"entities [1-9]\d* linked \(25/25 docs\)", final), final
        assert re.search(r"GCN \w+ -> version \d+: [1-9]\d* of .*, announced on graph\.embeddings"
                         r"\.v1$", final), final
        demo_docs = {d.doc_id for d in reuters.load(limit=25)}
        answer = progress[progress.index("search 'oil prices': 3 hits") + 1:]
        assert len(answer) == 3
        assert {line.split()[1] for line in answer} <= demo_docs, answer
        children = _children(up.pid)
        assert len(children) >= 7  # tansu, weed, falkordb, the five workers
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "stopped cleanly" in output
    assert not stack_file.exists()
    assert [pid for pid in children if _alive(pid)] == []


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_tail_filters_by_type_subject_and_field(env, settings, topics):
    from producers.events import document_deleted
    from ragstream.publisher import Publisher

    async with Publisher(settings) as pub:
        await pub.publish([document_upserted("news-1", "a", version=1),
                           document_upserted("news-2", "b", version=3),
                           document_upserted("blog-1", "c", version=3),
                           document_deleted("news-3", version=4)])
    result = ragstream("tail", "documents.v1", "--from-beginning", "--limit", "1",
                       "--type", "ragstream.document.upserted", "--subject", "news-*",
                       "--where", "version=3", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["event"]["subject"] == "news-2"


async def test_tail_prints_dead_letters_with_their_reason_and_bytes(env, settings, topics):
    from ragstream.publisher import Publisher
    from ragstream.transport.base import OutMessage
    from tests.helpers import eventually, running
    from workers.echo import EchoWorker

    bad = [b"\xff\xfenot utf-8", b'{"truncated": ', b"x" * 10_000]
    async with Publisher(settings) as pub:
        await pub.send_raw([OutMessage("documents.v1", b"k", v, []) for v in bad])
    async with running(EchoWorker(), settings):
        async def all_dead() -> bool:
            return len(await read_topic(settings, "documents.v1.dlq", timeout=0.5)) == 3
        await eventually(all_dead, 30, message="three dead letters")

    result = ragstream("tail", "documents.v1.dlq", "--from-beginning", "--limit", "3",
                       env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    letters = sorted((json.loads(line) for line in result.stdout.splitlines()),
                     key=lambda x: x["bytes"])
    assert [x["bytes"] for x in letters] == sorted(len(v) for v in bad)
    assert letters[0]["value"] == "\\xff\\xfenot utf-8"  # bytes that do not decode still show
    assert letters[2]["cut"] and len(letters[2]["value"]) == 4096
    for x in letters:
        assert x["headers"]["x-original-topic"] == "documents.v1"
        assert x["headers"]["x-error-reason"] and x["headers"]["x-stage"] == "decode"

    reason = letters[1]["headers"]["x-error-reason"]
    only = ragstream("tail", "documents.v1.dlq", "--from-beginning", "--limit", "1",
                     "--reason", reason, env=env, timeout=60)
    assert json.loads(only.stdout)["headers"]["x-error-reason"] == reason
    refused = ragstream("tail", "documents.v1.dlq", "--type", "x", env=env, timeout=60)
    assert refused.returncode == 2 and "--reason" in refused.stderr


async def test_dlq_replay_by_reason_republishes_only_those_letters_once(env, settings, topics):
    from ragstream.publisher import Publisher
    from ragstream.transport.base import OutMessage
    from tests.helpers import eventually, running
    from workers.echo import EchoWorker

    bad = {b"\xff\xfe": "invalid_utf8", b"{not json": "invalid_json",
           b'{"truncated": ': "invalid_json", b"[1, 2]": "invalid_envelope"}
    async with Publisher(settings) as pub:
        await pub.send_raw([OutMessage("documents.v1", f"k{i}".encode(), v, [("origin", b"t")])
                            for i, v in enumerate(bad)])
    async with running(EchoWorker(), settings):
        async def all_dead() -> bool:
            return len(await read_topic(settings, "documents.v1.dlq", timeout=0.5)) == len(bad)
        await eventually(all_dead, 30, message="four dead letters")
    letters = await read_topic(settings, "documents.v1.dlq", timeout=0.5)
    assert {r.value: dict(r.headers)["x-error-reason"].decode() for r in letters} == bad

    def replay(*args: str) -> str:
        result = ragstream("dlq", "replay", "documents.v1.dlq", *args, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stderr.strip()

    assert replay("--reason", "invalid_json") == "replayed 2, passed over 2 (other reasons)"
    # the reason's group remembers how far it got; another reason has its own
    assert replay("--reason", "invalid_json") == "replayed 0, passed over 0 (other reasons)"
    assert replay("--reason", "invalid_utf8") == "replayed 1, passed over 3 (other reasons)"

    # the topic has several partitions, so a replay is known by its header, not its position
    replayed = [r for r in await read_topic(settings, "documents.v1", timeout=0.5)
                if "x-replay-count" in dict(r.headers)]
    assert sorted(r.value for r in replayed) == sorted([b"\xff\xfe", b"{not json",
                                                        b'{"truncated": '])
    for r in replayed:  # the bytes and the key unchanged; the dead-letter headers gone
        assert r.key == f"k{list(bad).index(r.value)}".encode()
        assert dict(r.headers) == {"origin": b"t", "x-replay-count": b"1"}


async def test_search_answers_from_the_live_index(env, settings, topics, minilm, tmp_path):
    from ragstream.publisher import Publisher
    from tests.retrieval_support import pipeline, settled

    docs = {"fish": "Zebrafish regenerate heart muscle after injury through cardiomyocyte "
                    "division, unlike mammals, whose hearts scar.",
            "plants": "Photosynthesis converts light energy into chemical energy stored in "
                      "glucose, in the chloroplasts of plant cells."}
    async with pipeline(settings, minilm) as (embedding, reindex):
        async with Publisher(settings) as pub:
            await pub.publish(document_upserted(d, t, version=1) for d, t in docs.items())
        await settled(settings, embedding, reindex, documents=2)

    result = ragstream("search", "how do zebrafish hearts heal", "-k", "2", "--json", env=env,
                       timeout=120)
    assert result.returncode == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["chunk_id"] for h in hits] == ["fish#0", "plants#0"]
    assert hits[0]["text"] == docs["fish"]
    assert (hits[0]["dense_rank"], hits[0]["sparse_rank"]) == (1, 1)  # both rankings agree
    assert hits[1]["sparse_rank"] is None  # no query word in it: BM25 misses it, MiniLM not

    refused = ragstream("search", "zebrafish", "--rerank", env=env, timeout=120)
    assert refused.returncode == 2 and "no re-ranker is configured" in refused.stderr

    standin = build_standin(tmp_path / "cross-encoder")
    reranking = {**env, "RAGSTREAM_SERVING_RERANKER": "cross-encoder",
                 "RAGSTREAM_SERVING_RERANKER_MODEL": str(standin)}
    result = ragstream("search", "how do zebrafish hearts heal", "-k", "2", "--rerank", "--json",
                       env=reranking, timeout=120)
    assert result.returncode == 0, result.stderr
    reranked = [json.loads(line) for line in result.stdout.splitlines()]
    assert {h["chunk_id"] for h in reranked} == {"fish#0", "plants#0"}
    scores = [h["rerank_score"] for h in reranked]
    assert None not in scores and scores == sorted(scores, reverse=True)


async def test_topics_create_makes_every_topic_and_the_workers_queues(transport_env,
                                                                      transport_settings):
    from schemas.catalogue import all_topic_names

    settings = transport_settings
    result = ragstream("topics", "--create", "--workers", "echo", env=transport_env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "topic catalogue" in result.stdout and "documents.v1" in result.stdout
    names = all_topic_names()
    if settings.transport == "kafka":
        from aiokafka.admin import AIOKafkaAdminClient

        from ragstream.transport.kafka import connection_options

        admin = AIOKafkaAdminClient(**connection_options(settings))
        await admin.start()
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        assert partitions == dict.fromkeys(names, settings.topic_partitions)
    else:
        import kombu

        from ragstream.transport.rabbitmq import consumer_queue, dead_letter_queue

        queues = [consumer_queue(settings, settings.group_id("echo"), "documents.v1")]
        queues += [dead_letter_queue(settings, n) for n in names if n.endswith(".dlq")]
        with kombu.Connection(settings.rabbitmq_url.get_secret_value()) as conn:
            channel = conn.default_channel
            for queue in queues:  # passive: raises if the broker has no such queue
                channel.queue_declare(queue.name, passive=True)
    again = ragstream("topics", "--create", "--workers", "echo", env=transport_env, timeout=60)
    assert again.returncode == 0, again.stderr  # existing topics are left as they are


def test_apikey_new_prints_the_key_once_and_an_entry_the_gateway_accepts():
    from pydantic import SecretStr

    from ragstream.config import Settings
    from ragstream.gateway.auth import KeyStore

    result = ragstream("apikey", "new", "ingest", "--scopes", "publish,infer", "--rate", "5",
                       "--burst", "20", env={})
    assert result.returncode == 0, result.stderr
    [key] = re.findall(r"API key for ingest \(shown once\): (\S+)", result.stderr)
    entry = json.loads(result.stdout)
    assert key not in result.stdout  # the entry holds only its digest
    assert entry == {"id": "ingest", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                     "scopes": ["publish", "infer"], "rate_per_s": 5.0, "burst": 20}
    store = KeyStore(Settings(api_keys=SecretStr(json.dumps([entry]))))
    store.maybe_reload()
    found = store.authenticate(key)
    assert found is not None and found.allows("infer") and not found.allows("search")
    assert store.authenticate(key[:-1] + ("x" if key[-1] != "x" else "y")) is None

    refused = ragstream("apikey", "new", "x", "--scopes", "publish,everything", env={})
    assert refused.returncode != 0 and "everything" in refused.stderr


def test_demo_against_a_stack_that_is_not_running_fails_clearly(tmp_path):
    env = {"RAGSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "RAGSTREAM_DATA_DIR": str(tmp_path)}
    result = ragstream("demo", "--limit", "3", "--wait", "10", env=env, timeout=120)
    assert result.returncode == 1
    assert f"no stack answers at {env['RAGSTREAM_KAFKA_BOOTSTRAP']}" in result.stderr
    assert "ragstream up" in result.stderr and "Traceback" not in result.stderr
