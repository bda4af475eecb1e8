"""The GCN's OpenCypher templates. Every value is a parameter; no template is formatted with data.

Versioned embeddings, two slots per entity:
    e.gcn, e.gcn_v            the newest vector written and its version
    e.gcn_prev, e.gcn_prev_v  the one it replaced
    (:Meta {id: $meta}).current  the visible version: the single write that publishes a version
A reader takes, per entity, the newest slot whose version is <= current; a refresh killed before
its flip leaves slots with versions > current, which readers skip, so they see all-old.
"""

# The GCN graph: entities with a text embedding, and the co-occurrence edges between them.
# Internal ids keep a million-edge export small; the node read maps them to entity ids.
READ_NODES = """
MATCH (e:Entity)
WHERE e.embedding IS NOT NULL
RETURN ID(e), e.id, e.embedding
"""

READ_EDGES = """
MATCH (a:Entity)-[c:CO_OCCURS]->(b:Entity)
WHERE a.embedding IS NOT NULL AND b.embedding IS NOT NULL
RETURN ID(a), ID(b), c.weight
"""

# The dirty entities as they are now; an id with no row was deleted.
READ_ENTITIES = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
OPTIONAL MATCH (e)-[c:CO_OCCURS]-(n:Entity)
RETURN e.id, e.embedding, collect(n.id), collect(c.weight)
"""

# Re-running it for the same version only overwrites the vector: the slot shift happens once.
# Vectors: FalkorDB stores vecf32, Neo4j a float list (the one dialect difference here).
WRITE_EMBEDDINGS = {
    "falkordb": """
UNWIND $rows AS r
MATCH (e:Entity {id: r.id})
SET e.gcn_prev = CASE WHEN e.gcn_v IS NULL OR e.gcn_v < $version THEN e.gcn ELSE e.gcn_prev END,
    e.gcn_prev_v = CASE WHEN e.gcn_v IS NULL OR e.gcn_v < $version THEN e.gcn_v ELSE e.gcn_prev_v END,
    e.gcn = vecf32(r.vector), e.gcn_v = $version
RETURN count(e)
""",
    "neo4j": """
UNWIND $rows AS r
MATCH (e:Entity {id: r.id})
SET e.gcn_prev = CASE WHEN e.gcn_v IS NULL OR e.gcn_v < $version THEN e.gcn ELSE e.gcn_prev END,
    e.gcn_prev_v = CASE WHEN e.gcn_v IS NULL OR e.gcn_v < $version THEN e.gcn_v ELSE e.gcn_prev_v END,
    e.gcn = r.vector, e.gcn_v = $version
RETURN count(e)
""",
}

# Undo what a killed refresh wrote and nobody will complete: slots newer than the visible version.
ROLL_BACK_UNPUBLISHED = """
MATCH (e:Entity)
WHERE e.gcn_v > $current
SET e.gcn = e.gcn_prev, e.gcn_v = e.gcn_prev_v
RETURN count(e)
"""

# The one write that makes a version visible; never moves backwards.
FLIP = """
MERGE (m:Meta {id: $meta})
WITH m
WHERE coalesce(m.current, 0) < $version
SET m.current = $version, m.model = $model, m.dimension = $dimension,
    m.changed_since_train = $changed_since_train, m.updated_at = timestamp()
RETURN m.current
"""

READ_CURRENT = """
MATCH (m:Meta {id: $meta})
RETURN m.current, m.model, m.dimension, m.changed_since_train
"""

_VISIBLE = """
WITH m, e, CASE WHEN e.gcn_v <= m.current THEN e.gcn
                WHEN e.gcn_prev_v <= m.current THEN e.gcn_prev END AS vector
WHERE vector IS NOT NULL
RETURN m.current, e.id, vector
"""
# One query reads the version and the vectors: a consistent snapshot on both backends.
READ_VISIBLE = "MATCH (m:Meta {id: $meta})\nMATCH (e:Entity)\nWHERE e.gcn_v IS NOT NULL" + _VISIBLE
READ_VISIBLE_IDS = "MATCH (m:Meta {id: $meta})\nUNWIND $ids AS id\nMATCH (e:Entity {id: id})" + _VISIBLE

READ_WRITTEN_AT = """
MATCH (e:Entity)
WHERE e.gcn_v = $version
RETURN e.id
"""
