"""Graph (GCN) embeddings of the knowledge graph's entities, kept current incrementally.

    graph.py    the entity graph as tensors, and patching it with the dirty entities' current rows
    model.py    the 2-layer GCN encoder, its features, exact subset inference and GAE training
    store.py    reading the graph and writing versioned embeddings, with an atomic version flip
    refresh.py  the refresh jobs: incremental, full inference, full retrain; crash-safe resume
    dirty.py    the dirty-entity set that kg.changes.v1 fills and the refresh drains
    tasks.py    the Celery tasks the beat schedule runs
"""
