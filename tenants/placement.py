"""Where a tenant's TaskFlow rows live: the names of the placements, and nothing else.

A tenant in schema mode has a schema of its own; every tenant in rls mode shares one schema,
guarded by row-level security. Importable anywhere (Alembic revisions too): no Django, no engine.
"""

# The schema name TaskFlow's tables are defined under (taskflow.models); a bound connection's
# schema_translate_map points it at the tenant's placement.
PLACEHOLDER_SCHEMA = "tenant"
SHARED_SCHEMA = "shared"
