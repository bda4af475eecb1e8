"""The embedding cache's namespace, shared by the embedding worker and ``ragstream reembed``.

Cached vectors and ledgers are keyed by model id and namespace. Bumping the namespace makes
every cache lookup miss and every ledger look stale, so each chunk is embedded again.
"""

from __future__ import annotations


def cache_namespace_key(prefix: str) -> str:
    return f"{prefix}:embedding:namespace"


async def bump_namespace(client, prefix: str) -> int:
    """Start a new namespace (an async Redis client); returns its number."""
    return await client.incr(cache_namespace_key(prefix))
