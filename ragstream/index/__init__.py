"""The hybrid (dense + BM25) chunk index: durable state in Redis, replicas in every reader.

Readers use ``ragstream.vectorstores.search``. This module imports nothing, so importing a part of the
index (the reindex worker's ``store``, the replica) never loads the search side and its
embedder, and ``replica -> index -> search -> replica`` cannot form. See docs/retrieval.md."""
