"""The knowledge graph: one GraphStore over FalkorDB (embedded default) or Neo4j (production)."""

from __future__ import annotations

from ragstream.config import KgSettings, Settings
from ragstream.graph.backends import CypherBackend, FalkorBackend, Neo4jBackend
from ragstream.graph.store import GraphConflict, GraphStore


def open_backend(settings: Settings, kg: KgSettings | None = None) -> CypherBackend:
    """Neo4j when ``neo4j_uri`` is set, else FalkorDB on ``redis_url``."""
    kg = kg or settings.kg
    if settings.neo4j_uri:
        password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else None
        return Neo4jBackend(settings.neo4j_uri, settings.neo4j_user, password, kg.neo4j_database)
    return FalkorBackend(settings.redis_url.get_secret_value(), kg.graph_name(settings))


async def open_graph_store(settings: Settings, kg: KgSettings | None = None) -> GraphStore:
    """A GraphStore with its constraints in place."""
    kg = kg or settings.kg
    store = GraphStore(open_backend(settings, kg), kg.orphans)
    await store.setup()
    return store


__all__ = ["GraphConflict", "GraphStore", "KgSettings", "open_backend", "open_graph_store"]
