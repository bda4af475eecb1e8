"""One reader on every transport: the Reader protocol itself, and the tools built on it
(``ragstream tail``, ``ragstream reembed``, ``ragstream dlq replay``, the gateway's /v1/infer
reply routing), each on real Kafka (Tansu) and the machine's RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from producers.events import document_deleted, document_upserted
from ragstream.publisher import Publisher
from ragstream.config import Settings
from ragstream.transport import ensure_topics, open_reader
from ragstream.transport.base import OutMessage, TopicPartition
from ragstream.transport.memory import MemoryBroker
from schemas.catalogue import all_topic_names
from tests.conftest import PARTITIONS
from tests.helpers import running


def ragstream(*args: str, env: dict[str, str], timeout: float = 120,
              **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragstream", *args], text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **env}, **popen)


async def publish(settings: Settings, envelopes) -> None:
    async with Publisher(settings) as pub:
        await pub.publish(envelopes)


async def read_n(reader, n: int, timeout: float = 30) -> list:
    out: list = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out += await reader.getmany(200, n - len(out))
    return out


async def declare(settings: Settings, groups: dict[str, tuple[str, ...]]) -> None:
    """RabbitMQ keeps events only for queues that exist: declare a group's before publishing."""
    await ensure_topics(settings, all_topic_names(), PARTITIONS, groups)


# the protocol -----------------------------------------------------------------------------------


async def test_a_group_reader_resumes_where_its_group_committed(transport_settings,
                                                                 transport_topics):
    settings = transport_settings
    group = settings.group_id("reader-test")
    await declare(settings, {group: ("documents.v1",)})
    await publish(settings, [document_upserted(f"d{i}", "t", version=1) for i in range(5)])

    async with open_reader(settings, ["documents.v1"], group=group,
                           from_beginning=True) as reader:
        first = await read_n(reader, 5)
        assert await reader.caught_up(await reader.end_offsets())
        await reader.commit()
    assert sorted(json.loads(r.value)["subject"] for r in first) == [f"d{i}" for i in range(5)]

    await publish(settings, [document_upserted("d9", "t", version=1)])
    async with open_reader(settings, ["documents.v1"], group=group,
                           from_beginning=True) as reader:
        [again] = await read_n(reader, 1)
        assert json.loads(again.value)["subject"] == "d9"  # not the five it committed
        assert await reader.getmany(500, 10) == []


async def test_a_groupless_reader_from_the_end_sees_only_what_comes_after_it_started(
        transport_settings, transport_topics):
    settings = transport_settings
    await publish(settings, [document_upserted("before", "t", version=1)])
    async with open_reader(settings, ["documents.v1"]) as reader:
        assert await reader.caught_up(await reader.end_offsets())
        await publish(settings, [document_upserted("after", "t", version=1)])
        [record] = await read_n(reader, 1)
        assert json.loads(record.value)["subject"] == "after"
        assert await reader.getmany(300, 10) == []
    if settings.transport == "rabbitmq":  # RabbitMQ kept nothing of the past for it
        with pytest.raises(ValueError, match="no history"):
            open_reader(settings, ["documents.v1"], from_beginning=True)


async def test_a_one_shot_reader_stops_at_the_ends_it_found(transport_settings,
                                                             transport_topics):
    settings = transport_settings
    group = settings.group_id("one-shot")
    await declare(settings, {group: ("documents.v1",)})
    await publish(settings, [document_upserted(f"d{i}", "t", version=1) for i in range(7)])
    async with open_reader(settings, ["documents.v1"], group=group,
                           from_beginning=True) as reader:
        ends = await reader.end_offsets()
        # not an exact count: Tansu answers a partition's end as its last batch's first offset
        # + 1 (a fetch's high watermark is right); fetches return whole batches, so it holds
        assert not await reader.caught_up(ends)
        seen = 0
        while not await reader.caught_up(ends):
            seen += len(await reader.getmany(2000, 3))
        assert seen == 7


async def test_the_memory_reader_keeps_the_same_promises():
    broker = MemoryBroker(partitions=2)
    settings = Settings(transport="memory")
    broker.append(OutMessage("t.v1", b"a", b"1"))
    async with open_reader(settings, ["t.v1"], broker=broker) as tail, \
            open_reader(settings, ["t.v1"], group="g", from_beginning=True, broker=broker) as g:
        broker.append(OutMessage("t.v1", b"b", b"2"))
        assert [r.value for r in await tail.getmany(100, 10)] == [b"2"]
        ends = await g.end_offsets()
        assert sum(ends.values()) == 2
        assert sorted(r.value for r in await g.getmany(100, 10)) == [b"1", b"2"]
        assert await g.caught_up(ends)
        await g.commit()
    broker.append(OutMessage("t.v1", b"c", b"3"))
    async with open_reader(settings, ["t.v1"], group="g", broker=broker) as g:
        assert [r.value for r in await g.getmany(100, 10)] == [b"3"]
        assert await g.position(TopicPartition("t.v1", 0)) + \
            await g.position(TopicPartition("t.v1", 1)) == 3
    with pytest.raises(ValueError, match="broker passed in"):
        open_reader(settings, ["t.v1"])


# the tools on it --------------------------------------------------------------------------------


async def test_tail_follows_a_topic_from_now_on(transport_env, transport_settings,
                                                transport_topics):
    settings = transport_settings
    await publish(settings, [document_upserted("old", "t", version=1)])
    tail = subprocess.Popen(
        [sys.executable, "-m", "ragstream", "tail", "documents.v1", "--limit", "1",
         "--subject", "new-*"], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **transport_env})
    try:
        # tail prints nothing until it reads: publish until it has started and caught one
        for i in range(60):
            await publish(settings, [document_upserted(f"new-{i}", "t", version=1)])
            try:
                out, err = tail.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("tail printed nothing in 60 s")
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    [line] = out.splitlines()
    assert json.loads(line)["event"]["subject"].startswith("new-")


async def test_tail_and_replay_dead_letters(transport_env, transport_settings, transport_topics):
    """Dead letters with two reasons: tail shows them without consuming them, a replay with a
    reason takes only its own back to their topic, and the others stay for theirs."""
    settings = transport_settings
    letters = [OutMessage("documents.v1.dlq", f"k{i}".encode(), f"bytes {i}".encode(),
                          [("x-original-topic", b"documents.v1"),
                           ("x-error-reason", b"schema" if i < 3 else b"oversized"),
                           ("x-error-message", b"boom"), ("traceparent", b"keep-me")])
               for i in range(5)]
    async with Publisher(settings) as pub:
        await pub.send_raw(letters)

    for _ in range(2):  # reading dead letters does not consume them
        shown = ragstream("tail", "documents.v1.dlq", "--from-beginning", "--limit", "5",
                          env=transport_env, timeout=60)
        assert shown.returncode == 0, shown.stderr
        got = [json.loads(line) for line in shown.stdout.splitlines()]
        assert sorted(x["value"] for x in got) == sorted(m.value.decode() for m in letters)
    only = ragstream("tail", "documents.v1.dlq", "--from-beginning", "--limit", "1",
                     "--reason", "oversized", env=transport_env, timeout=60)
    assert json.loads(only.stdout)["headers"]["x-error-reason"] == "oversized"

    async with open_reader(settings, ["documents.v1"]) as documents:
        replayed = ragstream("dlq", "replay", "documents.v1.dlq", "--reason", "schema",
                             env=transport_env, timeout=60)
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 3, passed over 2" in replayed.stderr  # the console writes to stderr
        back = await read_n(documents, 3)
    assert sorted(r.value for r in back) == [b"bytes 0", b"bytes 1", b"bytes 2"]
    for record in back:  # the original key and headers, without the dead-letter ones
        headers = dict(record.headers)
        assert record.key == b"k" + record.value[-1:]
        assert headers["traceparent"] == b"keep-me" and headers["x-replay-count"] == b"1"
        assert "x-error-reason" not in headers

    # the other reason's letters are still there for their own replay
    async with open_reader(settings, ["documents.v1"]) as documents:
        rest = ragstream("dlq", "replay", "documents.v1.dlq", "--reason", "oversized",
                         env=transport_env, timeout=60)
        assert "replayed 2" in rest.stderr, rest.stderr
        assert len(await read_n(documents, 2)) == 2


async def test_reembed_resends_the_latest_live_documents_every_time(
        transport_env, transport_settings, transport_topics, redis_client):
    from producers.reembed import reembed_group

    settings = transport_settings
    # a group sees exactly what the runs publish (Tansu answers the end of a partition with its
    # last batch's first offset + 1, so a reader "from the end" could see an older batch's rest)
    observer = settings.group_id("observer")
    await declare(settings, {**reembed_group(settings), observer: ("documents.v1",)})
    await publish(settings, [document_upserted("a", "a1", version=1),
                             document_upserted("a", "a2", version=2),
                             document_upserted("b", "b1", version=1),
                             document_upserted("c", "c1", version=1),
                             document_deleted("c", version=2)])

    async def published(n: int) -> list[dict]:
        async with open_reader(settings, ["documents.v1"], group=observer,
                               from_beginning=True) as documents:
            records = await read_n(documents, n)
            assert await documents.getmany(500, 10) == []
            await documents.commit()
        return [json.loads(r.value)["data"] for r in records]

    await published(5)
    for namespace in (1, 2):  # the second run finds what the first re-sent: nothing is lost
        done = ragstream("reembed", env=transport_env, timeout=90)
        assert done.returncode == 0, done.stderr
        assert f"namespace {namespace}; re-sent 2 documents" in done.stderr, done.stderr
        resent = await published(2)
        assert sorted((d["doc_id"], d["text"]) for d in resent) == [("a", "a2"), ("b", "b1")]
    key = f"{settings.group_prefix}:embedding:namespace"
    assert int(redis_client.get(key)) == 2


# /v1/infer over both transports -----------------------------------------------------------------


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    from ragstream.triton.server import TritonServer

    server = TritonServer(tmp_path_factory.mktemp("triton"), models="minilm")
    server.start()
    yield server
    server.stop()


async def test_infer_round_trips_through_the_worker(transport_env, transport_topics, triton,
                                                    tmp_path):
    from ragstream.gateway.auth import new_key
    from ragstream.stack import ManagedProcess, free_port
    from workers.batch_inference import BatchInferenceWorker

    env = {**transport_env, **triton.worker_env("grpc"), "RAGSTREAM_INFERENCE_MAX_DELAY_MS": "20"}
    settings = Settings.from_env(env)
    key, entry = new_key("admin", ["admin"], 1000.0, 1000)
    keys_file = tmp_path / "api_keys.json"
    keys_file.write_text(json.dumps([entry.model_dump()]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = ManagedProcess(
        "gateway", [sys.executable, "-m", "ragstream", "gateway", "--port", str(port)],
        tmp_path / "gateway.log", env={**env, "RAGSTREAM_API_KEYS_FILE": str(keys_file),
                                       "RAGSTREAM_GATEWAY_INFER_TIMEOUT_S": "20"})
    gateway.start()
    try:
        gateway.wait_ready(lambda: httpx.get(url + "/healthz").status_code == 200, 60)
        async with running(BatchInferenceWorker(), settings):
            texts = [f"sentence number {i} about {uuid.uuid4().hex[:6]}" for i in range(3)]

            async def ask(text: str) -> httpx.Response:
                async with httpx.AsyncClient(timeout=30) as client:
                    return await client.post(url + "/v1/infer", headers={
                        "Authorization": f"Bearer {key}"}, json={
                        "model": "minilm", "inputs": [{"name": "text", "datatype": "BYTES",
                                                       "shape": [1], "data": [text]}]})
            answers = await asyncio.gather(*(ask(t) for t in texts))
    finally:
        gateway.stop()
    for r in answers:
        assert r.status_code == 200, (r.text, gateway.log_path.read_text(errors="replace")[-3000:])
        body = r.json()
        assert body["status"] == "ok"
        [tensor] = body["outputs"]
        assert tensor["name"] == "embedding" and tensor["shape"] == [384]
    # each answer is its own request's: the texts differ, so the vectors do
    vectors = [tuple(r.json()["outputs"][0]["data"][:8]) for r in answers]
    assert len(set(vectors)) == 3


async def test_infer_answers_at_once_while_results_cannot_be_read():
    """A broker the result router cannot reach is a 503 (TransportUnavailable) at once, not a
    504 after the timeout."""
    from ragstream.errors import TransportUnavailable
    from ragstream.gateway.results import ResultRouter
    from schemas.payloads import InferenceRequested, Tensor

    unreachable = Settings.from_env({
        "RAGSTREAM_TRANSPORT": "rabbitmq", "RAGSTREAM_RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:9//",
        "RAGSTREAM_GATEWAY_INFER_TIMEOUT_S": "30"})
    gateway = ResultRouter(unreachable, publisher=None)
    router = asyncio.create_task(gateway._route_results())
    try:
        async with asyncio.timeout(10):
            while gateway._failure is None:
                await asyncio.sleep(0.05)
        request = InferenceRequested(correlation_id="c1", model="minilm", inputs=[
            Tensor(name="text", datatype="BYTES", shape=[1], data=["hello"])])
        async with asyncio.timeout(2):
            with pytest.raises(TransportUnavailable, match="RabbitMQ unreachable"):
                await gateway.infer(request, gateway.request_message(request, None))
        assert gateway._pending == {}
    finally:
        router.cancel()
