"""Removes the TaskFlow tables an older setup_platform left in `public`.

setup_platform used to take the public tenant row for a tenant schema and migrate it, so
installations set up before the migrator refused `public` hold TaskFlow tables there (projects,
tasks, comments, their history tables, alembic_version), unused by anything. setup_platform
removes them on its next run; on an installation without them it finds nothing to do.

It drops tables only: the shared objects in `public` that tenant schemas use (the id sequence,
the history trigger functions) stay. Which tables are TaskFlow's is read from the shared
schema, which holds the TaskFlow tables and nothing else.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenants.placement import SHARED_SCHEMA

# The public tables that are also the shared schema's (TaskFlow's and alembic_version).
TASKFLOW_TABLES_IN_PUBLIC = """
SELECT p.relname FROM pg_class p
WHERE p.relnamespace = 'public'::regnamespace AND p.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_class s
              WHERE s.relnamespace = to_regnamespace(%s) AND s.relname = p.relname
                AND s.relkind IN ('r', 'p'))
ORDER BY p.relname
"""


def taskflow_tables_in_public(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute(TASKFLOW_TABLES_IN_PUBLIC, (SHARED_SCHEMA,))]


def remove_taskflow_tables_from_public(conn: psycopg.Connection) -> list[str]:
    """Drop the TaskFlow tables in `public` in one statement (their own foreign keys and
    triggers go with them, nothing else does: no CASCADE); return their names."""
    tables = taskflow_tables_in_public(conn)
    if tables:
        names = sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)
        conn.execute(sql.SQL("DROP TABLE {}").format(names))
    return tables
