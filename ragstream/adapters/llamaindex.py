"""A LlamaIndex retriever over a ragstream gateway: ``retriever.retrieve("question")`` gives
``NodeWithScore``s, best first; a node's id is the chunk id, its metadata the document's plus
ids and scores, its score the re-ranker's where it re-ranked, else the fused (RRF) score.

    retriever = RagstreamRetriever("http://127.0.0.1:8080", "rsk_...", similarity_top_k=4)
    nodes = retriever.retrieve("does vitamin D prevent fractures")

It plugs into ``RetrieverQueryEngine`` and everything else that takes a ``BaseRetriever``.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ragstream.adapters.client import GatewayClient, SearchOptions, hit_metadata


class RagstreamRetriever(BaseRetriever):
    def __init__(self, base_url: str, api_key: str, similarity_top_k: int = 4,
                 store: str | None = None, dense: float = 1.0, sparse: float = 1.0,
                 per_document: bool = False, filter: dict[str, Any] | None = None,
                 rerank: bool | None = None, timeout_s: float = 30.0,
                 callback_manager: CallbackManager | None = None):
        super().__init__(callback_manager=callback_manager)
        self._gateway = GatewayClient(base_url, api_key, store, timeout_s)
        self._options = SearchOptions(similarity_top_k, dense, sparse, per_document, filter,
                                      rerank)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(h) for h in self._gateway.search(query_bundle.query_str, self._options)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._gateway.asearch(query_bundle.query_str, self._options)
        return [_node(h) for h in hits]


def _node(hit: dict) -> NodeWithScore:
    score = hit["rerank_score"] if hit.get("rerank_score") is not None else hit["score"]
    return NodeWithScore(node=TextNode(id_=hit["chunk_id"], text=hit["text"],
                                       metadata=hit_metadata(hit)), score=score)
