"""Shared by the retrieval benchmarks: a BEIR folder reader, and the embedding and reindex
workers running in this process on an embedded Tansu and FalkorDB."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ragstream.config import Settings
from ragstream.runner import running
from ragstream.stack import embedded_services
from ragstream.transport import ensure_topics
from schemas.catalogue import all_topic_names
from workers.embedding import EmbeddingWorker
from workers import load, reindex_worker


@dataclass
class Beir:
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def load_beir(folder: Path, split: str = "test") -> Beir:
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[str(d["_id"])] = (d.get("title", ""), d["text"])
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = {str(q["_id"]): q["text"] for q in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return Beir(corpus, {q: queries[q] for q in qrels}, qrels)


@contextlib.contextmanager
def services(durable: bool = True, **overrides) -> Settings:
    """Fresh embedded Tansu and FalkorDB in a temporary folder, and settings that reach them.
    ``durable=False``: Tansu keeps its topics in memory, with no S3 server beside it."""
    with tempfile.TemporaryDirectory(prefix="ragstream-bench-") as tmp, \
            embedded_services(Path(tmp), env={}, durable=durable) as svc:
        settings = Settings.from_env(svc.env, topic_partitions=4, batch_timeout_ms=20,
                                     log_level="WARNING", **overrides)
        asyncio.run(ensure_topics(settings, all_topic_names(), settings.topic_partitions))
        yield settings


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, embedder) -> AsyncIterator[None]:
    """The embedding worker and the reindex worker of the search store, in this process."""
    reindex = load(reindex_worker(settings.store.search))()
    async with running(EmbeddingWorker(embedder), settings), running(reindex, settings):
        yield
