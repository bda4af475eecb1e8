"""The gateway's search, from Python over HTTP: what the framework retrievers call.

Every search goes through ``POST /v1/search`` (one query, or a batch), so filters, weights and
re-ranking reach the gateway the same way from every adapter. A non-2xx answer raises
``GatewayError`` with the status and the gateway's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


class GatewayError(RuntimeError):
    def __init__(self, status_code: int, detail: Any):
        super().__init__(f"ragstream gateway answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class SearchOptions:
    """What shapes a search besides its text (the fields of one ``POST /v1/search`` query)."""

    k: int = 4
    dense: float = 1.0
    sparse: float = 1.0
    per_document: bool = False
    filter: dict[str, Any] | None = None  # {"doc_ids": [...], "metadata": {...}}
    rerank: bool | None = None  # None: as the deployment is configured

    def query(self, text: str) -> dict[str, Any]:
        q = {"q": text, "k": self.k, "dense": self.dense, "sparse": self.sparse,
             "per_document": self.per_document}
        if self.filter is not None:
            q["filter"] = self.filter
        if self.rerank is not None:
            q["rerank"] = self.rerank
        return q


@dataclass
class GatewayClient:
    base_url: str  # the gateway's root, e.g. http://127.0.0.1:8080
    api_key: str = field(repr=False)
    store: str | None = None  # default: the deployment's search store
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self._headers = {"Authorization": f"Bearer {self.api_key}"}
        self._sync: httpx.Client | None = None

    def search(self, text: str, options: SearchOptions = SearchOptions()) -> list[dict]:
        """The hits of one query, best first (each a dict of ``SearchHit``'s fields)."""
        return self.search_many([text], options)[0]

    def search_many(self, texts: list[str], options: SearchOptions = SearchOptions()
                    ) -> list[list[dict]]:
        if self._sync is None:
            self._sync = httpx.Client(base_url=self.base_url, timeout=self.timeout_s,
                                      headers=self._headers)
        return _hits(self._sync.post("/v1/search", json=self._body(texts, options)))

    async def asearch(self, text: str, options: SearchOptions = SearchOptions()) -> list[dict]:
        # a client per call: an httpx.AsyncClient belongs to the event loop that made it
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s,
                                     headers=self._headers) as client:
            return _hits(await client.post("/v1/search", json=self._body([text], options)))[0]

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    def _body(self, texts: list[str], options: SearchOptions) -> dict[str, Any]:
        body: dict[str, Any] = {"queries": [options.query(t) for t in texts]}
        if self.store is not None:
            body["store"] = self.store
        return body


def _hits(response: httpx.Response) -> list[list[dict]]:
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:500]
        raise GatewayError(response.status_code, detail)
    return [result["hits"] for result in response.json()["results"]]


def hit_metadata(hit: dict) -> dict[str, Any]:
    """A hit's document metadata, with where it came from and how it scored."""
    return {**hit.get("metadata", {}), "doc_id": hit["doc_id"], "chunk_id": hit["chunk_id"],
            "position": hit.get("position", 0), "score": hit["score"],
            "rerank_score": hit.get("rerank_score")}
