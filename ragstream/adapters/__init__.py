"""Retrievers for the RAG frameworks, backed by a ragstream gateway over HTTP with an API key
(``search`` scope): ``langchain.RagstreamRetriever`` (langchain-core) and
``llamaindex.RagstreamRetriever`` (llama-index-core). They need ``pip install
ragstream[adapters]``; ``client.GatewayClient`` is what both call. OpenAI-style clients need no
adapter: the gateway's ``POST /v1/embeddings`` speaks OpenAI's API (docs/serving.md)."""
