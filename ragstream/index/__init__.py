"""The hybrid (dense + BM25) chunk index: durable state in Redis, replicas in every reader.

See docs/retrieval.md for the design."""

from ragstream.index.search import FusionWeights, Hit, Searcher, search

__all__ = ["FusionWeights", "Hit", "Searcher", "search"]
