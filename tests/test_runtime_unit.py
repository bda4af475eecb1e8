"""The runtime's event path on the in-memory transport: fast, and exact about each decision."""

from __future__ import annotations

import asyncio
import json
import zlib

import pytest

from producers.events import document_upserted
from ragstream.publisher import encode
from ragstream.config import Settings
from ragstream.errors import WiringError
from ragstream.runtime import Batch, PermanentError, Sink, SinkUnavailable, Worker
from ragstream.transport.base import OutMessage, TopicPartition
from ragstream.transport.memory import MemoryBroker
from tests.helpers import eventually, running


def memory_settings(**kw) -> Settings:
    return Settings(transport="memory", batch_timeout_ms=20, retry_backoff_s=0.01,
                    max_backoff_s=0.2, max_attempts=3, **kw)


class ListSink(Sink):
    """Keeps every flushed item; ``fail_next`` makes the next flushes raise."""

    def __init__(self):
        self.items: list = []
        self.failures: list[Exception] = []

    async def flush(self, items: list) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.items.extend(items)


class Recorder(Worker):
    name = "recorder"
    consumes = ("documents.v1",)

    def __init__(self, poison: set[str] = frozenset(), permanent: bool = False):
        self.poison, self.permanent = poison, permanent
        self.calls = 0
        self.poison_calls = 0  # calls whose batch held a poison event
        self.sink = ListSink()

    async def setup(self, ctx) -> None:
        self.sinks = {"out": self.sink}

    async def process(self, batch: Batch) -> None:
        self.calls += 1
        self.poison_calls += any(e.payload.doc_id in self.poison for e in batch.events)
        for event in batch.events:
            if event.payload.doc_id in self.poison:
                raise (PermanentError if self.permanent else ValueError)(
                    f"cannot handle {event.payload.doc_id}")
            batch.write("out", (event.key, event.payload.version))


def publish(broker: MemoryBroker, envelopes) -> None:
    for e in envelopes:
        broker.append(encode(e))


def dead_letters(broker: MemoryBroker) -> list[dict]:
    return [{k: v.decode() for k, v in r.headers if k.startswith("x-")} | {"value": r.value}
            for r in broker.records("documents.v1.dlq")]


async def wait_committed(broker: MemoryBroker, group: str = "ragstream.recorder") -> None:
    async def done() -> bool:
        ends = {tp: len(log) for tp, log in broker.logs.items() if tp.topic == "documents.v1"}
        return all(broker.committed.get((group, tp)) == end for tp, end in ends.items())
    await eventually(done, 10, interval=0.02, message="all offsets committed")


async def test_bad_input_goes_to_the_dlq_with_its_reason_and_the_rest_is_processed():
    broker = MemoryBroker()
    good = [document_upserted(f"d{i}", "text", version=1) for i in range(3)]
    publish(broker, good)
    valid = json.loads(encode(good[0]).value)
    bad_values = {
        "invalid_json": b"{not json",
        "invalid_utf8": b"\xff\xfe\x00",
        "invalid_envelope": json.dumps({"type": "x"}).encode(),
        "unknown_type": json.dumps(valid | {"type": "ragstream.nope"}).encode(),
        "unsupported_version": json.dumps(valid | {"schemaversion": 2}).encode(),
        "invalid_payload": json.dumps(valid | {"data": {"doc_id": "d", "version": "x"}}).encode(),
        "oversized": json.dumps(valid | {"data": valid["data"] | {"text": "x" * 2_000_000}}).encode(),
    }
    for i, value in enumerate(bad_values.values()):
        broker.append(OutMessage("documents.v1", f"bad{i}".encode(), value))
    worker = Recorder()
    async with running(worker, memory_settings(), broker=broker) as runtime:
        await wait_committed(broker)
        sample = runtime.metrics.registry.get_sample_value
        labels = {"worker": "recorder", "topic": "documents.v1"}
        freshness = (sample("ragstream_event_freshness_seconds_count", labels),
                     sample("ragstream_event_freshness_seconds_sum", labels))
        processed = sample("ragstream_events_processed_total", labels)

    assert sorted(worker.sink.items) == [("d0", 1), ("d1", 1), ("d2", 1)]
    assert processed == 3 and freshness[0] == 3  # the good events, each observed once
    assert 0 < freshness[1] < 60  # event time to now, in seconds
    letters = dead_letters(broker)
    assert sorted(d["x-error-reason"] for d in letters) == sorted(bad_values)
    for d in letters:
        assert d["value"] == bad_values[d["x-error-reason"]]  # the original bytes, unchanged
        assert d["x-stage"] == "decode" and d["x-original-topic"] == "documents.v1"
        assert {"x-error-class", "x-error-message", "x-attempts", "x-original-partition",
                "x-original-offset"} <= d.keys()


@pytest.mark.parametrize("permanent", [False, True])
async def test_a_poison_event_is_isolated_and_its_batch_mates_are_processed(permanent):
    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(20)])
    worker = Recorder(poison={"d7"}, permanent=permanent)
    async with running(worker, memory_settings(), broker=broker):
        await wait_committed(broker)

    assert sorted(worker.sink.items) == sorted((f"d{i}", 1) for i in range(20) if i != 7)
    [letter] = dead_letters(broker)
    assert letter["x-original-offset"] == "7"
    assert letter["x-error-class"] == ("PermanentError" if permanent else "ValueError")
    assert letter["x-error-reason"] == ("permanent" if permanent else "retries_exhausted")
    # honest: every process call the event was in, all failed (3 whole-batch tries, or 1 for a
    # permanent error, then one per level of the split)
    assert letter["x-attempts"] == str(worker.poison_calls)
    assert worker.poison_calls == (1 if permanent else 3) + 4  # 20 -> 10 -> 5 -> 3 -> 1
    assert letter["x-stage"] == "process"


async def test_a_transient_error_is_retried_without_dead_letters():
    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(5)])
    worker = Recorder()
    worker.sink.failures = [RuntimeError("blip")]
    async with running(worker, memory_settings(), broker=broker) as runtime:
        await wait_committed(broker)
        retried = runtime.metrics.retried.labels("recorder", "documents.v1")._value.get()
    assert sorted(worker.sink.items) == [(f"d{i}", 1) for i in range(5)]
    assert dead_letters(broker) == []
    assert retried == 5


async def test_an_unavailable_sink_pauses_and_replays_and_never_drops():
    broker = MemoryBroker(partitions=2)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(10)])
    worker = Recorder()
    # five outages in a row: far more than max_attempts, yet nothing may be dead-lettered
    worker.sink.failures = [SinkUnavailable("store down") for _ in range(5)]
    async with running(worker, memory_settings(), broker=broker) as runtime:
        await wait_committed(broker)
        pauses = runtime.metrics.backpressure.labels("recorder")._value.get()
    assert sorted(set(worker.sink.items)) == sorted((f"d{i}", 1) for i in range(10))
    assert dead_letters(broker) == []
    assert pauses == 5


def keys_on(broker: MemoryBroker, partition: int, n: int) -> list[str]:
    """``n`` document ids that the broker puts on ``partition``."""
    keys = (f"d{i}" for i in range(10_000))
    return [k for k in keys if zlib.crc32(k.encode()) % broker.partitions == partition][:n]


def read_to(runtime, tp: TopicPartition, offset: int):
    """A check: the runtime's consumer has handed out ``tp`` up to ``offset``."""
    async def check() -> bool:
        return runtime.consumer.position(tp) == offset
    return check


async def test_the_next_batch_is_read_while_one_is_written_and_handled_after_it():
    broker = MemoryBroker(partitions=1)
    keys = [f"d{i}" for i in range(10)]
    publish(broker, [document_upserted(k, "t", version=1) for k in keys])
    writing, gate = asyncio.Event(), asyncio.Event()

    class SlowSink(ListSink):
        async def flush(self, items: list) -> None:
            writing.set()
            await gate.wait()
            await super().flush(items)

    worker = Recorder()
    worker.sink, worker.max_batch_records = SlowSink(), 5
    async with running(worker, memory_settings(), broker=broker) as runtime:
        await asyncio.wait_for(writing.wait(), 5)
        tp = TopicPartition("documents.v1", 0)
        await eventually(read_to(runtime, tp, 10), 5,
                         message="the second batch read while the first is written")
        # read and decoded only: not processed, nothing of it written, nothing committed
        assert worker.calls == 1 and worker.sink.items == []
        assert ("ragstream.recorder", tp) not in broker.committed
        gate.set()
        await wait_committed(broker)
    assert worker.calls == 2
    assert worker.sink.items == [(k, 1) for k in keys]  # in the partition's order


async def test_what_was_read_ahead_is_rewound_with_a_batch_that_meets_backpressure():
    # the batch holds partition 0 only, and the read-ahead all of partition 1: rewinding the
    # batch's partitions alone would skip partition 1's records, consumed but never handled
    broker = MemoryBroker(partitions=2)
    first, second = keys_on(broker, 0, 5), keys_on(broker, 1, 5)
    publish(broker, [document_upserted(k, "t", version=1) for k in first + second])

    class DownOnce(ListSink):
        async def flush(self, items: list) -> None:
            if not self.failures:
                return await super().flush(items)
            runtime = await started
            await eventually(read_to(runtime, TopicPartition("documents.v1", 1), 5), 5,
                             interval=0.01, message="partition 1 read ahead")
            raise self.failures.pop()

    started = asyncio.get_running_loop().create_future()
    worker = Recorder()
    worker.sink, worker.max_batch_records = DownOnce(), 5
    worker.sink.failures = [SinkUnavailable("store down")]
    async with running(worker, memory_settings(), broker=broker) as runtime:
        started.set_result(runtime)
        await wait_committed(broker)
        pauses = runtime.metrics.backpressure.labels("recorder")._value.get()
    assert pauses == 1
    assert sorted(worker.sink.items) == sorted((k, 1) for k in first + second)
    assert dead_letters(broker) == []


async def test_rejected_events_are_dead_lettered_by_name():
    class Picky(Recorder):
        async def process(self, batch: Batch) -> None:
            for event in batch.events:
                if event.payload.text == "bad":
                    batch.reject(event, "empty_text", "the text is not usable")
                else:
                    batch.write("out", event.key)

    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted("a", "good", version=1), document_upserted("b", "bad", version=1)])
    worker = Picky()
    async with running(worker, memory_settings(), broker=broker):
        await wait_committed(broker)
    assert worker.sink.items == ["a"]
    [letter] = dead_letters(broker)
    assert (letter["x-error-reason"], letter["x-error-class"]) == ("empty_text", "Rejected")


async def test_emitted_events_have_ids_derived_from_their_cause():
    class Echo(Recorder):
        async def process(self, batch: Batch) -> None:
            from schemas.catalogue import ECHO_RECEIPT
            from schemas.payloads import EchoReceipt

            for e in batch.events:
                batch.emit("echo.v1", ECHO_RECEIPT, EchoReceipt(
                    source_event_id=e.id, source_type=e.type, topic=e.record.topic,
                    partition=e.record.partition, offset=e.record.offset, subject=e.key), cause=e)

    envelope = document_upserted("a", "t", version=1,
                                 traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    ids = []
    for _ in range(2):  # the same event processed twice (a replay) emits the same id
        broker = MemoryBroker(partitions=1)
        publish(broker, [envelope])
        async with running(Echo(), memory_settings(), broker=broker):
            await wait_committed(broker)
        [receipt] = broker.records("echo.v1")
        body = json.loads(receipt.value)
        ids.append(body["id"])
        assert body["traceparent"].split("-")[1] == "a" * 32  # same trace
    assert ids[0] == ids[1]


async def test_a_worker_can_ask_for_smaller_batches():
    class Small(Recorder):
        max_batch_records = 3

        async def process(self, batch: Batch) -> None:
            self.sizes.append(len(batch.events))
            await super().process(batch)

    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(10)])
    worker = Small()
    worker.sizes = []
    async with running(worker, memory_settings(), broker=broker):
        await wait_committed(broker)
    assert max(worker.sizes) == 3 and sum(worker.sizes) == 10


def test_an_oversized_dead_letter_keeps_its_head_and_says_it_was_cut():
    # found by the chaos suite: a 10 MB event went to the DLQ through a producer capped at
    # 2 MB, the send raised, the worker died, and every restart replayed it and died again
    from ragstream.runtime import DeadLetter
    from ragstream.transport.base import Record

    raw = b"y" * 10_000_000
    record = Record("documents.v1", 2, 41, b"k", raw, [], 0)
    message = DeadLetter(record, "DecodeError", "oversized", "too big", "decode", 1) \
        .to_message("embedding", max_bytes=1024 * 1024)
    headers = dict(message.headers)
    assert message.value == raw[:1024 * 1024]
    assert headers["x-truncated"] == b"true" and headers["x-original-size"] == b"10000000"
    assert headers["x-error-reason"] == b"oversized" and headers["x-original-offset"] == b"41"
    small = DeadLetter(record._replace(value=b"{}"), "DecodeError", "invalid_envelope", "m",
                       "decode", 1).to_message("embedding", max_bytes=1024 * 1024)
    assert small.value == b"{}" and "x-truncated" not in dict(small.headers)


async def test_a_store_down_at_start_is_waited_for_not_a_crash():
    # found by the chaos suite: the entity-linking worker reads the graph in setup, and one
    # restarted during a graph-store outage died there, again and again, until the store was back
    class DownAtStart(Recorder):
        def __init__(self):
            super().__init__()
            self.setups = 0

        async def setup(self, ctx) -> None:
            self.setups += 1
            if self.setups <= 2:
                raise ConnectionError("graph store down")
            await super().setup(ctx)

    broker = MemoryBroker()
    publish(broker, [document_upserted(f"d{i}", "text", version=1) for i in range(3)])
    worker = DownAtStart()
    async with running(worker, memory_settings(), broker=broker):
        async def committed() -> bool:
            return sum(n for (g, _), n in broker.committed.items()
                       if g == "ragstream.recorder") == 3
        await eventually(committed, 10, interval=0.02, message="all offsets committed")
    assert worker.setups == 3
    assert sorted(worker.sink.items) == [("d0", 1), ("d1", 1), ("d2", 1)]


async def test_a_write_to_an_unknown_sink_crashes_the_worker_and_dead_letters_nothing():
    # A typo in a sink name used to be retried, bisected (~380 process calls for 500 events)
    # and dead-lettered whole, flushing nothing. It is a bug in the worker: crash, say why.
    class Typo(Recorder):
        async def process(self, batch: Batch) -> None:
            self.calls += 1
            for event in batch.events:
                batch.write("otu", event.key)

    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted(f"d{i}", "t", version=1) for i in range(5)])
    worker = Typo()
    with pytest.raises(WiringError, match="'otu'.*\\['out'\\]"):
        async with running(worker, memory_settings(), broker=broker) as runtime:
            await eventually(lambda: _done(runtime), 10, interval=0.02, message="the worker stops")
    assert worker.calls == 1
    assert dead_letters(broker) == []
    assert broker.committed == {}


async def _done(runtime) -> bool:
    return not runtime._alive


async def test_sinks_that_are_not_sinks_stop_the_worker_at_setup():
    class Miswired(Recorder):
        async def setup(self, ctx) -> None:
            self.sinks = {"out": self.sink.items}  # a list, not a Sink

    broker = MemoryBroker(partitions=1)
    publish(broker, [document_upserted("d0", "t", version=1)])
    worker = Miswired()
    with pytest.raises(WiringError, match="not Sink objects"):
        async with running(worker, memory_settings(), broker=broker):
            pass
    assert worker.calls == 0


def test_observe_many_matches_observe_one_at_a_time():
    from prometheus_client import CollectorRegistry, generate_latest

    from ragstream.metrics import LATENCY_BUCKETS, BulkHistogram

    ages = [-1.0, 0.0, 0.005, 0.0051, 0.3, 7.0, 300.0, 1e6]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = BulkHistogram("f", "f", ("t",), buckets=LATENCY_BUCKETS, registry=one)
    h2 = BulkHistogram("f", "f", ("t",), buckets=LATENCY_BUCKETS, registry=many)
    for a in ages:
        h1.labels("x").observe(max(a, 0.0))
    h2.labels("x").observe_many(ages)

    def series(registry) -> list[bytes]:
        return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]
    assert series(one) == series(many)


@pytest.mark.parametrize(("armed", "dies_at"), [
    ("decoded", "decoded"),  # any key: the batch holds two records of doc-1
    ("flushed", "flushed"),
    ("published=doc-2|doc-1", "published"),
    ("decoded=doc-2", None),  # doc-2 is in the batch once: no crash
])
def test_a_failpoint_kills_the_worker_at_its_step_on_a_batch_with_two_records_of_one_key(
        armed, dies_at):
    """The chaos harness's crash at a chosen step: a worker started with RAGSTREAM_FAILPOINTS
    SIGKILLs itself there: before processing, after its sinks flushed (nothing published), or
    after publishing (nothing committed)."""
    import os
    import signal
    import subprocess
    import sys

    script = """
import asyncio
from producers.events import document_upserted
from ragstream import logs
from ragstream.config import Settings
from ragstream.publisher import encode
from ragstream.runner import running
from ragstream.runtime import Batch, Worker
from ragstream.transport.memory import MemoryBroker

class Steps(Worker):
    name, consumes = "steps", ("documents.v1",)

    async def process(self, batch: Batch) -> None:
        print("processed", len(batch.events), flush=True)

async def main():
    logs.configure()  # a worker's JSON lines, which the harness reads
    broker = MemoryBroker(partitions=1)  # one partition: the three records make one batch
    for e in (document_upserted("doc-1", "a", version=1),
              document_upserted("doc-1", "b", version=2),
              document_upserted("doc-2", "c", version=1)):
        broker.append(encode(e))
    async with running(Steps(), Settings(transport="memory", batch_timeout_ms=20),
                       broker=broker):
        while sum(broker.committed.values()) < 3:
            await asyncio.sleep(0.01)
    print("done", flush=True)

asyncio.run(main())
"""
    env = {**os.environ, "RAGSTREAM_FAILPOINTS": armed, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    if dies_at is None:
        assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
        return
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert f'"failpoint": "{dies_at}"' in done.stderr and "done" not in done.stdout
    assert ("processed 3" in done.stdout) == (dies_at != "decoded")
