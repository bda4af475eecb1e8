"""The one set of OpenCypher templates, run unchanged by FalkorDB and Neo4j.

Every value travels as a parameter; no template is ever formatted with data. Each write takes a
whole consumed batch as lists (``UNWIND $docs``, ``$entities``, ...) and runs as one query, so a
batch is one round trip and each query is atomic on both backends. Dialect differences (constraints, vectors) live in dialect.py.
"""

# Apply a whole consumed batch in one query, all or nothing. Every document must still hold the
# state the worker read (base version, base deleted): the version check and the write are the
# same atomic query. If any document moved on, nothing is written and the conflicting ids are
# returned (the runtime retries the batch, which re-reads). Otherwise:
# - each document's version and entity lists are set and its old MENTIONS deleted;
# - $entities (one row per entity of the batch, aggregated by the store) are merged once each,
#   their surfaces joining the aliases;
# - $mentions are created, one row per (document, entity);
# - $pairs carry each co-occurrence edge's net weight change over the batch (old pairs -1, new
#   pairs +1, summed by the store, zeros left out); an edge whose weight falls to zero goes.
# Within one query a property written by one row is not seen by the next (three rows incrementing
# one pair gave 1, not 3), which is why entities and pairs arrive aggregated, one row each.
# Rows are positional lists, not maps (half the client's encoding time on FalkorDB); their
# layout is written once, in store.apply_params:
#   $docs      [doc, version, deleted, base_version, base_deleted, entity ids, cooccurring ids]
#   $entities  [id, name, type, context, surfaces]
#   $mentions  [doc, entity id, count, spans, surfaces, method, score, merged]
#   $pairs     [smaller id, larger id, weight change]
APPLY_DOCUMENTS = """
UNWIND $docs AS r
OPTIONAL MATCH (d:Document {id: r[0]})
WITH collect(CASE WHEN coalesce(d.version, -1) = r[3] AND coalesce(d.deleted, false) = r[4]
                  THEN null ELSE r[0] END) AS conflicts
CALL {
  WITH conflicts
  WITH conflicts WHERE size(conflicts) = 0
  UNWIND $docs AS r
  MERGE (d:Document {id: r[0]})
  SET d.version = r[1], d.deleted = r[2],
      d.prev_entities = coalesce(d.entities, []),
      d.prev_cooccurring = coalesce(d.cooccurring, []),
      d.entities = r[5], d.cooccurring = r[6]
  WITH d
  OPTIONAL MATCH (d)-[old:MENTIONS]->(:Entity)
  DELETE old
}
CALL {
  WITH conflicts
  WITH conflicts WHERE size(conflicts) = 0
  UNWIND $entities AS e
  MERGE (x:Entity {id: e[0]})
  ON CREATE SET x.name = e[1], x.type = e[2], x.context = e[3], x.aliases = e[4]
  ON MATCH SET x.aliases = x.aliases + [a IN e[4] WHERE NOT a IN x.aliases]
}
CALL {
  WITH conflicts
  WITH conflicts WHERE size(conflicts) = 0
  UNWIND $mentions AS m
  MATCH (d:Document {id: m[0]})
  MATCH (x:Entity {id: m[1]})
  CREATE (d)-[:MENTIONS {count: m[2], spans: m[3], surfaces: m[4], method: m[5], score: m[6],
                         merged: m[7]}]->(x)
}
CALL {
  WITH conflicts
  WITH conflicts WHERE size(conflicts) = 0
  UNWIND $pairs AS p
  MATCH (a:Entity {id: p[0]})
  MATCH (b:Entity {id: p[1]})
  MERGE (a)-[c:CO_OCCURS]->(b)
  ON CREATE SET c.weight = p[2]
  ON MATCH SET c.weight = c.weight + p[2]
  WITH c
  WHERE c.weight <= 0
  DELETE c
}
RETURN conflicts
"""

# Re-run on replay: a crash in an older version of the worker, between the write and this
# tidy-up, could leave zero-weight edges; removing them is idempotent.
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

# Merges: the audit trail and its undo ------------------------------------------------------------

# Every mention edge of one document, as the store needs it to rebuild the document's links.
READ_DOCUMENT_LINKS = """
MATCH (:Document {id: $doc})-[m:MENTIONS]->(e:Entity)
RETURN e.id, e.name, e.type, m.surfaces, m.spans, m.method, m.score, m.merged, e.context
ORDER BY e.id
"""

# The mention edges that hold a merge: mentions linked from another name.
READ_MERGES = """
MATCH (d:Document)-[m:MENTIONS]->(e:Entity)
WHERE size(coalesce(m.merged, [])) > 0
RETURN d.id, e.id, e.name, m.method, m.score, m.merged
ORDER BY d.id, e.id
LIMIT $limit
"""

# An undone merge, kept so that no later resolution makes it again.
RECORD_UNMERGES = """
UNWIND $rows AS r
MERGE (u:Unmerge {id: r.id})
ON CREATE SET u.own = r.own, u.entity = r.entity, u.doc = r.doc, u.surface = r.surface
"""

READ_UNMERGES = """
MATCH (u:Unmerge)
RETURN u.own, u.entity, u.doc, u.surface
ORDER BY u.id
"""

# Surfaces that left an entity stop being its aliases, unless another mention still uses them.
DROP_ALIASES = """
MATCH (e:Entity {id: $id})
OPTIONAL MATCH (e)<-[m:MENTIONS]-(:Document)
WITH e, collect(m.surfaces) AS used
SET e.aliases = [a IN e.aliases WHERE NOT a IN $surfaces OR any(s IN used WHERE a IN s)]
"""
