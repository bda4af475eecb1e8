"""GCN settings (``RAGSTREAM_GCN_*``), apart from the runtime's own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragstream.config import ENV_PREFIX


class GcnSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}GCN_", extra="ignore")

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
