"""Every Redis key ragstream builds, by family, under the deployment's prefix
(``RAGSTREAM_GROUP_PREFIX``, ``p`` below), so deployments sharing a Redis never meet.

- ``p:lock:<name>``: a scheduled task's lock (``exclusive_task``);
- ``p:redbeat...``: beat's schedule and leader lock (RedBeat's key prefix);
- ``p:index:...``: the hybrid index (see ragstream.index.store; its Lua script builds the keys
  from ``p`` itself, so a batch applies atomically);
- ``p:embedding:ledger:<doc>``, ``p:embedding:cache:<model>:<hash>``, ``p:embedding:namespace``:
  the embedding worker's ledgers and vector cache;
- ``p:embedding:query:<model>:<hash>``: search's query vectors (ragstream.serving.caches), a
  sibling of the document cache: a query's vector is computed the fast way and must never be
  stored as a chunk's;
- ``p:backfill:<store>``: where a backfill of that store stopped;
- ``p:ratelimit:<api key id>``: the gateway's token buckets;
- ``p:echo:...``: the echo worker's ledger (workers/echo.py);
- ``p.kg``: the FalkorDB graph, unless ``RAGSTREAM_KG_GRAPH`` names one.

Keys of a graph live under the graph's name, not the deployment's: deployments that share a
graph share its dirty set and its refresh lock.

- ``g:gcn:dirty``, ``g:gcn:triggered``, ``g:gcn:lock``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    @property
    def redbeat(self) -> str:
        return f"{self.prefix}:redbeat"

    @property
    def default_graph(self) -> str:
        return f"{self.prefix}.kg"

    # the index (ragstream.index.store.APPLY_CHANGES writes the same names)
    @property
    def index_log(self) -> str:
        return f"{self.prefix}:index:log"

    @property
    def index_log_floor(self) -> str:
        return f"{self.prefix}:index:log_floor"

    @property
    def index_chunk_prefix(self) -> str:
        return f"{self.prefix}:index:chunk:"

    def index_doc(self, doc_id: str) -> str:
        return f"{self.prefix}:index:doc:{doc_id}"

    def index_doc_chunks(self, doc_id: str) -> str:
        return f"{self.prefix}:index:doc_chunks:{doc_id}"

    @property
    def index_schema(self) -> str:
        """A hash: the model id and dimension of the index's vectors."""
        return f"{self.prefix}:index:schema"

    def store_backfill(self, store: str) -> str:
        """The last chunk id ``ragstream reindex --to <store>`` copied (it resumes after it)."""
        return f"{self.prefix}:backfill:{store}"

    # the embedding worker
    def embedding_ledger(self, doc_id: str) -> str:
        return f"{self.prefix}:embedding:ledger:{doc_id}"

    def embedding_cache(self, embedding: str, text_hash: str) -> str:
        return f"{self.prefix}:embedding:cache:{embedding}:{text_hash}"

    def query_embedding_cache(self, embedding: str, text_hash: str) -> str:
        return f"{self.prefix}:embedding:query:{embedding}:{text_hash}"

    @property
    def embedding_namespace(self) -> str:
        return f"{self.prefix}:embedding:namespace"

    def ratelimit(self, key_id: str) -> str:
        return f"{self.prefix}:ratelimit:{key_id}"


@dataclass(frozen=True)
class GraphKeys:
    graph: str

    @property
    def gcn_dirty(self) -> str:
        return f"{self.graph}:gcn:dirty"

    @property
    def gcn_triggered(self) -> str:
        return f"{self.graph}:gcn:triggered"

    @property
    def gcn_lock(self) -> str:
        return f"{self.graph}:gcn:lock"
