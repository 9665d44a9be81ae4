"""What in a placement's catalog would block its distribution on a Citus cluster.

A tenant schema (and the template it is cloned from) is distributed whole with
`citus_schema_distribute`: its tables become single-shard tables placed together on one node. The
shared schema's tables are distributed by `tenant_id` and colocated. Either way Citus refuses, or
runs wrongly, what this module lists: triggers (refused unless `citus.enable_unsafe_triggers`,
and statement-level triggers with transition tables do not see the shards' rows), unique keys and
foreign keys that leave out the distribution column, foreign keys that leave the schema, and
tables without `tenant_id` in the shared schema (kept local to the coordinator).

Read-only: it reads pg_catalog and never changes anything. Works on plain PostgreSQL, so the test
suite runs it against the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tenants.placement import SHARED_SCHEMA

DISTRIBUTION_COLUMN = "tenant_id"
# Bookkeeping tables without tenant_id: they stay local to the coordinator, which is allowed.
LOCAL_TABLES = frozenset({"alembic_version", "django_migrations", "django_content_type"})


@dataclass(frozen=True)
class Blocker:
    """One thing that stands in the way of distributing `schema`."""

    schema: str
    table: str
    kind: str  # trigger | key | foreign_key | no_tenant_id
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.schema}.{self.table}\t{self.kind}\t{self.name}\t{self.detail}"


TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""

# Unique constraints and unique indexes (partial ones too) with their columns' names.
UNIQUE_KEYS = """
SELECT c.relname, i.relname, array_agg(a.attname::text ORDER BY a.attname)
FROM pg_index x
JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (x.indkey) AND a.attnum > 0
WHERE n.nspname = %(s)s AND x.indisunique AND c.relkind IN ('r', 'p')
GROUP BY c.relname, i.relname
ORDER BY c.relname, i.relname
"""

FOREIGN_KEYS = """
SELECT c.relname, con.conname, rn.nspname, r.relname,
       (SELECT array_agg(a.attname::text) FROM pg_attribute a
        WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey)),
       pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE n.nspname = %(s)s AND con.contype = 'f'
ORDER BY c.relname, con.conname
"""

TABLES_WITHOUT_TENANT_ID = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p') AND NOT EXISTS (
  SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %(column)s AND NOT a.attisdropped)
ORDER BY c.relname
"""


def distribution_blockers(
    conn: psycopg.Connection, schema: str, *, by_rows: bool | None = None
) -> list[Blocker]:
    """What would block distributing `schema`: by tenant_id (`by_rows`, the shared schema's
    way by default) or whole on one node (a tenant schema's, the template's)."""
    if by_rows is None:
        by_rows = schema == SHARED_SCHEMA
    params = {"s": schema, "column": DISTRIBUTION_COLUMN}
    found = [
        Blocker(schema, table, "trigger", name, definition)
        for table, name, definition in conn.execute(TRIGGERS, params)
    ]
    local = set()
    if by_rows:
        for (table,) in conn.execute(TABLES_WITHOUT_TENANT_ID, params):
            local.add(table)
            if table not in LOCAL_TABLES:
                found.append(
                    Blocker(schema, table, "no_tenant_id", table, "cannot be distributed by it")
                )
        for table, name, columns in conn.execute(UNIQUE_KEYS, params):
            if table not in local and DISTRIBUTION_COLUMN not in (columns or []):
                found.append(
                    Blocker(schema, table, "key", name, f"unique on {columns} without tenant_id")
                )
    for table, name, target_schema, _target, columns, definition in conn.execute(
        FOREIGN_KEYS, params
    ):
        if target_schema != schema:
            found.append(
                Blocker(schema, table, "foreign_key", name, f"leaves the schema: {definition}")
            )
        elif by_rows and DISTRIBUTION_COLUMN not in (columns or []):
            found.append(
                Blocker(schema, table, "foreign_key", name, f"without tenant_id: {definition}")
            )
    return found
