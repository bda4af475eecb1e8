"""Settings from the environment and secret files; secrets never reach logs or reprs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ragstream import logs
from tests.helpers import json_logs
from ragstream.config import Settings, secret_values


def test_secret_files_and_redaction(tmp_path, monkeypatch):
    secret_file = tmp_path / "neo4j_password"
    secret_file.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("RAGSTREAM_NEO4J_PASSWORD_FILE", str(secret_file))
    monkeypatch.setenv("RAGSTREAM_REDIS_URL", "redis://:hunter2pw@cache.internal:6379/0")
    settings = Settings()

    assert settings.neo4j_password.get_secret_value() == "s3cr3t-from-file"
    assert "s3cr3t" not in repr(settings) and "hunter2pw" not in repr(settings)

    with json_logs("test.redaction") as stream:
        logging.getLogger("test.redaction").warning(
            "connecting with %s to %s", "s3cr3t-from-file",
            settings.redis_url.get_secret_value(), extra={"dsn": "pw=hunter2pw"})
    line = stream.getvalue()
    assert "s3cr3t" not in line and "hunter2pw" not in line
    assert logs.REDACTED in line


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_MAX_EVENT_BYTES", "2048")
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    settings = Settings()
    assert settings.max_event_bytes == 2048
    assert settings.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"


def test_sections_read_their_prefixed_variables(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_KG_ORPHANS", "prune")
    monkeypatch.setenv("RAGSTREAM_GCN_EPOCHS", "7")
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_RETRAIN", "30 4 * * *")
    monkeypatch.setenv("RAGSTREAM_GATEWAY_MAX_BODY_BYTES", "2048")
    settings = Settings()
    assert settings.kg.orphans == "prune" and settings.gcn.epochs == 7
    assert settings.schedule.gcn_retrain == "30 4 * * *"
    assert settings.gateway.max_body_bytes == 2048
    assert settings.kg.graph_name(settings) == "ragstream.kg"


def test_from_env_mapping_wins_over_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGSTREAM_KG_ORPHANS", "prune")
    monkeypatch.setenv("RAGSTREAM_KG_LINK_THRESHOLD", "0.7")
    graph_file = tmp_path / "graph"
    graph_file.write_text("from-a-file\n")
    settings = Settings.from_env({"RAGSTREAM_KG_ORPHANS": "keep", "RAGSTREAM_GROUP_PREFIX": "dep",
                                  "RAGSTREAM_KG_GRAPH_FILE": str(graph_file),
                                  "OTHER_VARIABLE": "ignored"}, gcn_epochs=3)
    assert settings.kg.orphans == "keep"              # the mapping
    assert settings.kg.link_threshold == 0.7          # the environment, where the mapping is silent
    assert settings.kg.graph == "from-a-file"         # a *_FILE for a field of a section
    assert settings.gcn.epochs == 3                   # an override, by its variable name
    assert settings.keys.lock("job") == "dep:lock:job"
    with pytest.raises(TypeError, match="gcn_epoch"):
        Settings.from_env({}, gcn_epoch=3)


def test_secret_files_of_the_environment_and_a_mapping(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("Bearer tok-from-file\n")
    monkeypatch.setenv("RAGSTREAM_TRITON_AUTH_HEADER_FILE", str(token))
    assert Settings().triton_auth_header.get_secret_value() == "Bearer tok-from-file"
    monkeypatch.delenv("RAGSTREAM_TRITON_AUTH_HEADER_FILE")
    url = tmp_path / "url"
    url.write_text("redis://:mapping-pw@cache:6379/0")
    settings = Settings.from_env({"RAGSTREAM_REDIS_URL_FILE": str(url)})
    assert settings.redis_url.get_secret_value() == "redis://:mapping-pw@cache:6379/0"
    assert "mapping-pw" in secret_values()


def test_invalid_values_fail_loudly(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_SCHEDULE_GCN_INCREMENTAL", "every minute")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("RAGSTREAM_SCHEDULE_GCN_INCREMENTAL")
    with pytest.raises(ValidationError):
        Settings.from_env({"RAGSTREAM_GATEWAY_MAX_BODY_BYTES": "12"})


def test_every_variable_the_readme_names_is_read():
    """A misspelled RAGSTREAM_ variable is silently ignored: the README's must all be real."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    named = set(re.findall(r"RAGSTREAM_([A-Z][A-Z0-9_]*[A-Z0-9])\b", readme))
    variables = Settings.variables()
    assert {"kg_orphans", "gateway_max_body_bytes", "schedule_gcn_retrain"} <= set(variables)
    unknown = {n for n in named if n.lower().removesuffix("_file") not in variables}
    assert unknown <= {"NAME", "SCHEDULE"}, unknown  # RAGSTREAM_<NAME>_FILE, RAGSTREAM_SCHEDULE_*
