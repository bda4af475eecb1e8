"""Entity recognition and resolution for the knowledge graph."""
