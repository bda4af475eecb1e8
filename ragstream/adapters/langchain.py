"""A LangChain retriever over a ragstream gateway: ``retriever.invoke("question")`` gives
``Document``s, best first, with the hit's document metadata, ids and scores in ``metadata``.

    retriever = RagstreamRetriever(base_url="http://127.0.0.1:8080", api_key="rsk_...", k=4)
    docs = retriever.invoke("does vitamin D prevent fractures")

It runs wherever LangChain takes a retriever (chains, ``as_tool``, ``batch``, ``ainvoke``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (AsyncCallbackManagerForRetrieverRun,
                                      CallbackManagerForRetrieverRun)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import PrivateAttr, SecretStr

from ragstream.adapters.client import GatewayClient, SearchOptions, hit_metadata


class RagstreamRetriever(BaseRetriever):
    base_url: str
    api_key: SecretStr
    k: int = 4
    store: str | None = None  # default: the deployment's search store
    dense: float = 1.0
    sparse: float = 1.0
    per_document: bool = False
    filter: dict[str, Any] | None = None  # {"doc_ids": [...], "metadata": {...}}
    rerank: bool | None = None  # None: as the deployment is configured
    timeout_s: float = 30.0

    _client: GatewayClient | None = PrivateAttr(default=None)

    def _gateway(self) -> GatewayClient:
        if self._client is None:
            self._client = GatewayClient(self.base_url, self.api_key.get_secret_value(),
                                         self.store, self.timeout_s)
        return self._client

    def _options(self) -> SearchOptions:
        return SearchOptions(self.k, self.dense, self.sparse, self.per_document, self.filter,
                             self.rerank)

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [_document(h) for h in self._gateway().search(query, self._options())]

    async def _aget_relevant_documents(
            self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [_document(h) for h in await self._gateway().asearch(query, self._options())]


def _document(hit: dict) -> Document:
    return Document(id=hit["chunk_id"], page_content=hit["text"], metadata=hit_metadata(hit))
