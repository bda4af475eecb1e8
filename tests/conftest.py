"""Real services for the tests: a fresh Tansu broker per test (it starts in milliseconds, so
topics never leak between tests) and one FalkorDB per session, keyed apart by a per-test prefix.
A service that cannot start fails the test run loudly; nothing is skipped."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from ragstream.config import Settings
from ragstream.stack import FalkorDB, Tansu
from ragstream.transport.kafka import ensure_topics
from schemas.catalogue import all_topic_names

PARTITIONS = 4


@pytest.fixture(scope="session")
def falkordb(tmp_path_factory) -> FalkorDB:
    server = FalkorDB(tmp_path_factory.mktemp("falkordb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tansu(tmp_path) -> Tansu:
    broker = Tansu(tmp_path)
    broker.start()
    yield broker
    broker.process.kill()  # memory storage: nothing to flush, and SIGTERM takes seconds
    broker.process.wait()


@pytest.fixture
def env(tansu: Tansu, falkordb: FalkorDB, tmp_path: Path) -> dict[str, str]:
    """RAGSTREAM_* settings for this test, for worker subprocesses and in-process runtimes."""
    return {
        "RAGSTREAM_KAFKA_BOOTSTRAP": tansu.bootstrap,
        "RAGSTREAM_KAFKA_IDEMPOTENCE": "false",
        "RAGSTREAM_REDIS_URL": falkordb.url,
        "RAGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "RAGSTREAM_GROUP_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "RAGSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
        "RAGSTREAM_SESSION_TIMEOUT_MS": "6000",
        "RAGSTREAM_HEARTBEAT_INTERVAL_MS": "500",
        "RAGSTREAM_BATCH_TIMEOUT_MS": "100",
        "RAGSTREAM_RETRY_BACKOFF_S": "0.05",
        "RAGSTREAM_MAX_BACKOFF_S": "2",
        "RAGSTREAM_LOG_LEVEL": "INFO",
    }


@pytest.fixture(params=["kafka", "rabbitmq"])
def transport_env(request, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a test that must hold on both transports; RabbitMQ names are per test."""
    prefix = env["RAGSTREAM_GROUP_PREFIX"]
    yield {**env, "RAGSTREAM_TRANSPORT": request.param, "RAGSTREAM_RABBITMQ_NAMESPACE": prefix}
    if request.param == "rabbitmq":
        from tests.helpers import delete_rabbitmq_namespace

        delete_rabbitmq_namespace(Settings(), prefix + ".")


@pytest.fixture
def transport_settings(transport_env: dict[str, str]) -> Settings:
    return Settings.from_env(transport_env)


@pytest.fixture
async def transport_topics(transport_settings: Settings) -> None:
    from ragstream.transport import ensure_topics as ensure

    await ensure(transport_settings, all_topic_names(), PARTITIONS,
                 {transport_settings.group_id("echo"): ("documents.v1",)})


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
async def topics(settings: Settings) -> None:
    await ensure_topics(settings, all_topic_names(), PARTITIONS)


@pytest.fixture
def redis_client(falkordb: FalkorDB) -> redis.Redis:
    client = redis.Redis(port=falkordb.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def minilm():
    """The offline MiniLM embedder, loaded once per session (loading takes ~10 s)."""
    from ragstream.embedders import MiniLMEmbedder

    return MiniLMEmbedder()
