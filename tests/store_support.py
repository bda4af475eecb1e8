"""Helpers for the store tests: build chunk operations by hand; the proxy that cuts a store's
connections lives in testing/proxy.py (the chaos harness cuts pgvector with it too)."""

from __future__ import annotations

import hashlib

import numpy as np

from ragstream.vectorstores.base import ChunkUpsert


def unit(*values: float, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[:len(values)] = values
    return v / np.linalg.norm(v)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def upsert(chunk_id: str, version: int, text: str, vector: np.ndarray | None = None,
           metadata: dict | None = None, model: str = "test-model") -> ChunkUpsert:
    """A chunk ``<doc>#<position>`` of document ``<doc>`` at ``version``."""
    doc_id, _, position = chunk_id.rpartition("#")
    if vector is None:  # a fixed vector per text, so a replay carries the same one
        seed = int(sha(text)[:8], 16)
        vector = unit(*np.random.default_rng(seed).standard_normal(8))
    return ChunkUpsert(chunk_id, doc_id, version, int(position), text, sha(text), model,
                       vector, metadata or {})
