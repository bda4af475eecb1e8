"""Settings from the environment (``RAGSTREAM_*``) or secret files (``RAGSTREAM_*_FILE``).

A ``*_FILE`` variable names a file whose content is the value (Docker and Kubernetes secrets).
Secrets are ``SecretStr``: they print as ``**********`` and are registered with the log redactor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RAGSTREAM_"

_secret_values: set[str] = set()


def secret_values() -> frozenset[str]:
    """Every secret value loaded so far, for the log redactor."""
    return frozenset(_secret_values)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    transport: Literal["kafka", "rabbitmq", "memory"] = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # Idempotent producer (exactly-once produce per partition). Real Kafka: keep it on. The embedded
    # Tansu 0.6 broker answers InitProducerId with UnknownError, so the embedded stack turns it off;
    # consumers stay correct through deterministic event ids and idempotent sinks.
    kafka_idempotence: bool = True
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672//")
    rabbitmq_namespace: str = "ragstream"  # prefix of every exchange and dead-letter queue
    # deliveries of one message before RabbitMQ dead-letters it itself: the net under a message
    # that crashes its worker every time, before the runtime can dead-letter it with a reason
    rabbitmq_delivery_limit: int = Field(default=20, ge=1)
    # one active consumer per queue keeps order per key; off, replicas compete and only the
    # version checks of the sinks keep the end state right
    rabbitmq_single_active_consumer: bool = False
    # redis://[:password@]host:port/db; the URL may hold a password, so it is a secret
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    neo4j_uri: str | None = None
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr | None = None

    data_dir: Path = Path(".ragstream")
    topic_partitions: int = Field(default=6, ge=1)
    group_prefix: str = "ragstream"

    # runtime
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    batch_max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    key_concurrency: int = Field(default=16, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=2_000, ge=100)
    drain_timeout_s: float = Field(default=30.0, gt=0)

    # embedding and retrieval (MiniLM reads at most 256 word pieces, special tokens included)
    chunk_tokens: int = Field(default=240, ge=32, le=254)
    chunk_overlap_tokens: int = Field(default=48, ge=0)
    max_chunks_per_document: int = Field(default=2_000, ge=1)
    # texts per model call, at most (exactly, padded with empty rows, where the row count would
    # change a vector's low bits; see MiniLMEmbedder). 4 was fastest here, with or without padding
    embed_batch_size: int = Field(default=4, ge=1)
    embedding_cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    search_candidates: int = Field(default=100, ge=1)
    rrf_k: int = Field(default=60, ge=1)

    # HTTP gateway. API keys: a JSON list of {"id", "sha256", "scopes", "rate_per_s", "burst"},
    # from the file (re-read when it changes, or on SIGHUP) or inline; never the keys themselves.
    api_keys_file: Path | None = None
    api_keys: SecretStr | None = None
    gateway_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    gateway_infer_timeout_s: float = Field(default=10.0, gt=0)

    # Triton Inference Server (the batch inference worker, and the embedder when embedder=triton).
    # TLS files and the auth header come from secrets (RAGSTREAM_TRITON_AUTH_HEADER_FILE).
    embedder: Literal["minilm", "triton"] = "minilm"
    triton_url: str = "127.0.0.1:8001"  # host:port; gRPC 8001, HTTP 8000
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_ssl: bool = False
    triton_root_certificates: Path | None = None
    triton_private_key: Path | None = None
    triton_certificate_chain: Path | None = None
    triton_auth_header_name: str = "authorization"
    triton_auth_header: SecretStr | None = None  # e.g. "Bearer <token>"
    triton_timeout_s: float = Field(default=30.0, gt=0)
    triton_embedder_model: str = "minilm"
    # micro-batching, per model+version; RAGSTREAM_INFERENCE_MODELS (a JSON object, or a file
    # re-read when it changes: RAGSTREAM_INFERENCE_MODELS_PATH) overrides these per model:
    # {"minilm": {"max_batch_size": 32, "max_delay_ms": 5, "max_inflight": 2,
    #             "fallback": "minilm_backup"}}
    inference_max_batch_size: int = Field(default=64, ge=1)
    inference_max_delay_ms: float = Field(default=5.0, ge=0)
    inference_max_inflight: int = Field(default=2, ge=1)  # Triton requests in flight per model
    inference_models: str = "{}"
    inference_models_path: Path | None = None
    inference_retries: int = Field(default=3, ge=0)  # transient Triton errors, per batch
    inference_retry_backoff_s: float = Field(default=0.1, gt=0)
    inference_breaker_failures: int = Field(default=5, ge=1)  # consecutive, then the breaker opens
    inference_breaker_reset_s: float = Field(default=5.0, gt=0)  # open, then one probe

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: pick a free port
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        for name in cls.model_fields:
            path = os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
            if path and name not in values:
                values[name] = Path(path).read_text().strip()
        return values

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                secret = value.get_secret_value()
                _secret_values.add(secret)
                # a password inside a URL is a secret of its own
                if "@" in secret and ":" in secret.split("@", 1)[0]:
                    password = secret.split("@", 1)[0].rsplit(":", 1)[-1]
                    if password:
                        _secret_values.add(password)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``RAGSTREAM_*`` variables given as a mapping (what a child process or an
        embedded stack is handed), over this process's own environment."""
        return cls(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()}, **overrides)

    def group_id(self, worker: str) -> str:
        return f"{self.group_prefix}.{worker}"
