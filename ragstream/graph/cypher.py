"""The one set of OpenCypher templates, run unchanged by FalkorDB and Neo4j.

Every value travels as a parameter; no template is ever formatted with data. Each write takes a
whole consumed batch as ``$rows`` and runs as one query, so a batch is one round trip and each
query is atomic on both backends. Dialect differences (constraints, vectors) live in dialect.py.
"""

# Replace each document's mentions and move co-occurrence weights from its old entity set to its
# new one. A row applies only if the document still holds the state the worker read (``base``):
# the version check and the write are the same atomic query. Returns the documents applied.
# Within one query a property written by one row is not seen by the next, so everything two rows
# can share (an entity's aliases, a pair's weight) is aggregated over the applied rows first.
APPLY_DOCUMENTS = """
UNWIND $rows AS r
MERGE (d:Document {id: r.doc})
ON CREATE SET d.version = -1, d.deleted = false, d.entities = [], d.cooccurring = []
WITH d, r
WHERE d.version = r.base_version AND d.deleted = r.base_deleted
SET d.version = r.version, d.deleted = r.deleted,
    d.prev_entities = d.entities, d.prev_cooccurring = d.cooccurring,
    d.entities = [e IN r.entities | e.id], d.cooccurring = r.cooccurring
WITH d, r
OPTIONAL MATCH (d)-[old:MENTIONS]->(:Entity)
DELETE old
WITH DISTINCT d, r
FOREACH (e IN r.entities |
  MERGE (x:Entity {id: e.id})
  ON CREATE SET x.name = e.name, x.type = e.type, x.aliases = [], x.context = e.context
  CREATE (d)-[:MENTIONS {count: e.count, spans: e.spans, surfaces: e.surfaces,
                         method: e.method, score: e.score}]->(x))
WITH collect(r) AS applied
CALL {
  WITH applied
  UNWIND applied AS r
  UNWIND r.entities AS e
  WITH e.id AS id, collect(e.surfaces) AS surfaces
  MATCH (x:Entity {id: id})
  SET x.aliases = reduce(acc = x.aliases, s IN surfaces |
        reduce(inner = acc, a IN s | CASE WHEN a IN inner THEN inner ELSE inner + a END))
}
CALL {
  WITH applied
  UNWIND applied AS r
  UNWIND [p IN r.old_pairs | [p[0], p[1], -1]] + [p IN r.new_pairs | [p[0], p[1], 1]] AS step
  WITH step[0] AS a_id, step[1] AS b_id, toInteger(sum(step[2])) AS delta
  WHERE delta <> 0
  MERGE (a:Entity {id: a_id})
  MERGE (b:Entity {id: b_id})
  MERGE (a)-[c:CO_OCCURS]->(b) ON CREATE SET c.weight = 0
  SET c.weight = c.weight + delta
}
UNWIND applied AS r
RETURN r.doc
"""

# Idempotent follow-up of APPLY_DOCUMENTS, also re-run on replay: a crash between the two
# queries leaves zero-weight edges that the replay removes.
DROP_EMPTY_EDGES = """
UNWIND $pairs AS p
MATCH (a:Entity {id: p[0]})-[c:CO_OCCURS]->(b:Entity {id: p[1]})
WHERE c.weight <= 0
DELETE c
"""

PRUNE_ORPHANS = """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
WHERE NOT (e)<-[:MENTIONS]-(:Document)
DETACH DELETE e
"""

READ_DOCUMENTS = """
UNWIND $ids AS id
MATCH (d:Document {id: id})
RETURN d.id, d.version, d.deleted, d.entities, d.cooccurring, d.prev_entities, d.prev_cooccurring
"""

# The gazetteer: entities mentioned by at least $min_docs documents, most mentioned first.
READ_GAZETTEER = """
MATCH (e:Entity)<-[m:MENTIONS]-(:Document)
WITH e, count(m) AS docs
WHERE docs >= $min_docs
RETURN e.id, e.name, e.type, e.aliases, e.embedding
ORDER BY docs DESC, e.id
LIMIT $limit
"""

ENTITIES_WITHOUT_EMBEDDING = """
MATCH (e:Entity)
WHERE e.embedding IS NULL
RETURN e.id, e.name, e.context
LIMIT $limit
"""

BUMP_GAZETTEER_VERSION = """
MERGE (m:Meta {id: 'gazetteer'})
ON CREATE SET m.version = 0
SET m.version = m.version + 1
RETURN m.version
"""

READ_GAZETTEER_VERSION = """
MATCH (m:Meta {id: 'gazetteer'})
RETURN m.version
"""

# Audit: how each document's mentions were linked to an entity (method, score, surface forms).
READ_LINKS = """
MATCH (d:Document)-[m:MENTIONS]->(e:Entity {id: $id})
RETURN d.id, m.surfaces, m.method, m.score, m.spans
ORDER BY d.id
"""

READ_MENTIONS = """
UNWIND $ids AS id
MATCH (d:Document {id: id})-[m:MENTIONS]->(e:Entity)
RETURN d.id, e.id, m.spans
"""

COUNT_NODES = "MATCH (n) RETURN labels(n)[0], count(n)"
COUNT_EDGES = "MATCH ()-[r]->() RETURN type(r), count(r), sum(coalesce(r.weight, r.count, 0))"
READ_COOCCURRENCE = """
MATCH (a:Entity)-[c:CO_OCCURS]->(b:Entity)
RETURN a.id, b.id, c.weight
ORDER BY a.id, b.id
"""
