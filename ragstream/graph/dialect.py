"""The two places FalkorDB's and Neo4j's Cypher differ: uniqueness constraints and vectors."""

from __future__ import annotations

from dataclasses import dataclass

# The labels whose ``id`` is unique: FalkorDB needs an index, then GRAPH.CONSTRAINT on it.
UNIQUE_LABELS = ("Entity", "Document", "Meta", "Unmerge")


@dataclass(frozen=True)
class Dialect:
    name: str
    # Stores ``r.vector`` on entity ``r.id`` for every row of ``$rows``.
    set_embeddings: str


FALKORDB = Dialect(
    name="falkordb",
    set_embeddings="""
UNWIND $rows AS r
MATCH (e:Entity {id: r.id})
SET e.embedding = vecf32(r.vector)
""",
)

NEO4J = Dialect(
    name="neo4j",
    set_embeddings="""
UNWIND $rows AS r
MATCH (e:Entity {id: r.id})
CALL db.create.setNodeVectorProperty(e, 'embedding', r.vector)
""",
)


# Labels cannot be parameters, so the schema statements are written out in full.
FALKORDB_INDEXES = (
    "CREATE INDEX FOR (n:Entity) ON (n.id)",
    "CREATE INDEX FOR (n:Document) ON (n.id)",
    "CREATE INDEX FOR (n:Meta) ON (n.id)",
    "CREATE INDEX FOR (n:Unmerge) ON (n.id)",
)

NEO4J_CONSTRAINTS = (
    "CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (n:Entity) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT document_id IF NOT EXISTS FOR (n:Document) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT meta_id IF NOT EXISTS FOR (n:Meta) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT unmerge_id IF NOT EXISTS FOR (n:Unmerge) REQUIRE n.id IS UNIQUE",
)
