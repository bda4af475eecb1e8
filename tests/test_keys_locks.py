"""Redis keys live under the deployment's prefix (ragstream.stores.keys): two deployments sharing
a Redis run their own scheduled jobs, while one deployment still runs each job once at a time."""

from __future__ import annotations

import uuid

import numpy as np
import redis

from ragstream import celery_app
from ragstream.config import Settings
from ragstream.context import WorkerContext
from ragstream.index.store import APPLY_CHANGES, delete_args, upsert_args
from ragstream.locks import renewed_lock
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
