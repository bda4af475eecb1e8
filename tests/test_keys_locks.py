"""Redis keys live under the deployment's prefix (ragstream.stores.keys): two deployments sharing
a Redis run their own scheduled jobs, while one deployment still runs each job once at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import redis

from ragstream import celery_app
from ragstream.config import Settings
from ragstream.context import WorkerContext
from ragstream.index.store import APPLY_CHANGES, delete_args, upsert_args
from ragstream.locks import LockTimeout, renewed_lock
from ragstream.metrics import RuntimeMetrics
from ragstream.stores.keys import Keys


def test_two_deployments_sharing_a_redis_do_not_block_each_others_jobs(falkordb, monkeypatch):
    run = uuid.uuid4().hex[:8]
    name = f"test.exclusive.{run}"
    ran: list[str] = []

    @celery_app.exclusive_task(name)
    def job(settings: Settings) -> str:
        ran.append(settings.group_prefix)
        return "ran"

    a = Settings(redis_url=falkordb.url, group_prefix=f"a-{run}")
    b = Settings(redis_url=falkordb.url, group_prefix=f"b-{run}")
    holder = redis.Redis.from_url(falkordb.url)
    try:
        with renewed_lock(holder, a.keys.lock(name), ttl_s=30, wait_s=0):  # A's run goes on
            monkeypatch.setattr(celery_app, "settings", b)
            assert job() == "ran"                    # B's job is not A's
            monkeypatch.setattr(celery_app, "settings", a)
            assert job() == {"skipped": "locked"}     # A's own second run waits its turn
        assert job() == "ran"
        assert ran == [b.group_prefix, a.group_prefix]
        assert not holder.keys(f"ragstream:lock:{name}")  # never the shared default prefix
    finally:
        holder.close()


def test_the_index_script_writes_only_keys_the_key_module_names(redis_client):
    keys = Keys(f"keys-{uuid.uuid4().hex[:8]}")
    apply = redis_client.register_script(APPLY_CHANGES)
    vector = np.ones(4, dtype=np.float32)
    apply(args=[keys.prefix, *upsert_args("c1", "d1", 1, 0, "text", "h1", "m", vector)])
    written = {k.decode() for k in redis_client.scan_iter(match=f"{keys.prefix}:*")}
    assert written == {keys.index_log, f"{keys.index_chunk_prefix}c1", keys.index_doc("d1"),
                       keys.index_doc_chunks("d1")}
    apply(args=[keys.prefix, *delete_args("d1", 2, [], True)])
    written = {k.decode() for k in redis_client.scan_iter(match=f"{keys.prefix}:*")}
    assert written == {keys.index_log, keys.index_doc("d1")}
    redis_client.delete(*written)


async def test_the_context_builds_clients_from_the_settings_or_takes_a_tests_own(falkordb):
    settings = Settings(redis_url=falkordb.url, group_prefix=f"ctx-{uuid.uuid4().hex[:8]}")
    ctx = WorkerContext(settings, RuntimeMetrics())
    client = ctx.redis()
    try:
        await client.set(settings.keys.embedding_namespace, 1)
        with redis.Redis.from_url(falkordb.url) as check:  # it reached the configured Redis
            assert check.get(settings.keys.embedding_namespace) == b"1"
        await client.delete(settings.keys.embedding_namespace)
    finally:
        await client.aclose()
    embedder = object()
    ctx = WorkerContext(settings, RuntimeMetrics(), embedder=embedder,
                        graph_backend=lambda kg: ("backend for", kg.graph_name(settings)))
    assert ctx.embedder is embedder
    assert ctx.graph_backend() == ("backend for", f"{settings.group_prefix}.kg")


def test_a_renewed_lock_outlives_its_ttl_and_a_killed_holder_frees_it_within_one(falkordb):
    """The GCN refresh and every scheduled task hold such a lock for far longer than its TTL:
    renewal must keep others out all that time, and a holder that is killed must not keep it."""
    name, ttl = f"test.renewed.{uuid.uuid4().hex[:8]}", 2.0
    client = redis.Redis.from_url(falkordb.url)

    def taken_by_another() -> bool:
        other = client.lock(name, timeout=ttl, blocking_timeout=0, thread_local=False)
        if other.acquire():
            other.release()
            return True
        return False

    try:
        with renewed_lock(client, name, ttl_s=ttl, wait_s=0):
            held_until = time.monotonic() + 2.5 * ttl
            while time.monotonic() < held_until:
                assert not taken_by_another()
                assert 0 < client.pttl(name) <= ttl * 1000
                time.sleep(0.2)
            with pytest.raises(LockTimeout):  # the lock's own waiters time out too
                with renewed_lock(client, name, ttl_s=ttl, wait_s=0.3):
                    pass
        assert taken_by_another()  # released on exit, not left to expire

        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, falkordb.url, name, str(ttl)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            assert holder.stdout.readline() == "held\n"
            time.sleep(ttl)  # the holder has renewed by now
            assert not taken_by_another()
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
        # nobody renews it now: it is gone within what is left of one TTL, whatever the delay
        # between the kill and this read
        assert 0 < client.pttl(name) <= ttl * 1000
        deadline = time.monotonic() + ttl + 5
        while not taken_by_another():
            assert time.monotonic() < deadline, "a killed holder's lock outlived its TTL"
            time.sleep(0.1)
    finally:
        client.delete(name)
        client.close()


_HOLDER = """
import sys, time
import redis
from ragstream.locks import renewed_lock

url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
with renewed_lock(redis.Redis.from_url(url), name, ttl_s=ttl, wait_s=0):
    print("held", flush=True)
    time.sleep(600)
"""
