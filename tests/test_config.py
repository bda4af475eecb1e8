"""Settings from the environment and secret files; secrets never reach logs or reprs."""

from __future__ import annotations

import io
import logging

from ragstream import logs
from ragstream.config import Settings


def test_secret_files_and_redaction(tmp_path, monkeypatch):
    secret_file = tmp_path / "neo4j_password"
    secret_file.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("RAGSTREAM_NEO4J_PASSWORD_FILE", str(secret_file))
    monkeypatch.setenv("RAGSTREAM_REDIS_URL", "redis://:hunter2pw@cache.internal:6379/0")
    settings = Settings()

    assert settings.neo4j_password.get_secret_value() == "s3cr3t-from-file"
    assert "s3cr3t" not in repr(settings) and "hunter2pw" not in repr(settings)

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s to %s", "s3cr3t-from-file",
                       settings.redis_url.get_secret_value(), extra={"dsn": "pw=hunter2pw"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert "s3cr3t" not in line and "hunter2pw" not in line
    assert logs.REDACTED in line


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_MAX_EVENT_BYTES", "2048")
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    settings = Settings()
    assert settings.max_event_bytes == 2048
    assert settings.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"
