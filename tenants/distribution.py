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
from psycopg import sql

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


# --- History on distributed schemas ---------------------------------------------------------------
# On a distributed schema the statement-level history triggers fire on the worker's shards:
# TG_TABLE_NAME is `tasks_<shard id>`, the history table next to it is `tasks_history_<its own
# shard id>`, and the shard has no id default (the per-tenant sequence lives on the coordinator).
# This function finds the colocated history shard through pg_dist_shard (Citus syncs it to every
# node): the history table's one shard, or for tables distributed by tenant_id the shard of the
# same hash range. It writes the id itself: one past the largest id the row's history holds. So
# a row's history ids grow in the order it was written (the order the history API lists, by id),
# on whichever node the schema is and after a move, and the (tenant_id, row_id, id) key holds:
# writes to one row wait for each other's row locks, and each later statement's snapshot sees
# the earlier entries. Off Citus, or on a table that is not a shard, it writes
# `<table>_history` as v3 does. Otherwise the contract of public.taskflow_history_v3() (0005).
# Never changed in place (a new version gets a new name); created once by the first distribution.
CITUS_HISTORY_FUNCTION_NAME = "taskflow_history_citus_v1"
CITUS_HISTORY_FUNCTION = r"""
CREATE FUNCTION public.taskflow_history_citus_v1() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  base text := regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '');
  history text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_history');
  history_shard bigint;
  actor bigint := nullif(current_setting('app.actor_id', true), '')::bigint;
  request text := nullif(current_setting('app.request_id', true), '');
  next_id text;
  changes text;
BEGIN
  IF current_setting('app.copying_tenant', true) = 'on' THEN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
      RETURN NULL;
    END IF;
  END IF;
  IF base <> TG_TABLE_NAME AND to_regclass('pg_catalog.pg_dist_shard') IS NOT NULL THEN
    SELECT h.shardid INTO history_shard
    FROM pg_dist_shard s
    JOIN pg_dist_shard h
      ON h.logicalrelid = to_regclass(format('%I.%I', TG_TABLE_SCHEMA, base || '_history'))
     AND h.shardminvalue IS NOT DISTINCT FROM s.shardminvalue
    WHERE s.shardid = substring(TG_TABLE_NAME FROM '_([0-9]+)$')::bigint
      AND s.logicalrelid = to_regclass(format('%I.%I', TG_TABLE_SCHEMA, base));
    IF history_shard IS NOT NULL THEN
      history := format('%I.%I', TG_TABLE_SCHEMA, base || '_history_' || history_shard);
    END IF;
  END IF;
  next_id := format('coalesce((SELECT max(h.id) FROM %s h WHERE h.tenant_id = %%1$s.tenant_id'
                    ' AND h.row_id = %%1$s.id), 0) + 1', history);
  IF TG_OP = 'INSERT' THEN
    SELECT string_agg(format('%L, n.%I', c, c), ', ') INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (id, tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id, at)
       SELECT %s, n.tenant_id, n.id, ''insert'', n.version, jsonb_strip_nulls(jsonb_build_object(%s)), 2, $1, $2, now()
       FROM new_rows n', history, format(next_id, 'n'), changes) USING actor, request;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT string_agg(format('CASE WHEN o.%I IS DISTINCT FROM n.%I THEN jsonb_build_object(%L, jsonb_build_array(o.%I, n.%I)) ELSE ''{}''::jsonb END', c, c, c, c, c), ' || ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (id, tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id, at)
       SELECT %s, n.tenant_id, n.id,
              CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN ''soft_delete''
                   WHEN o.deleted_at IS NOT NULL AND n.deleted_at IS NULL THEN ''restore''
                   ELSE ''update'' END,
              n.version, %s, 1, $1, $2, now()
       FROM old_rows o JOIN new_rows n ON n.id = o.id', history, format(next_id, 'n'), changes)
      USING actor, request;
  ELSE
    SELECT string_agg(format('%L, CASE WHEN o.%I IS NOT NULL THEN jsonb_build_array(o.%I, NULL) END', c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (id, tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id, at)
       SELECT %s, o.tenant_id, o.id, ''delete'', o.version, jsonb_strip_nulls(jsonb_build_object(%s)), 1, $1, $2, now()
       FROM old_rows o', history, format(next_id, 'o'), changes) USING actor, request;
  END IF;
  RETURN NULL;
END
$fn$
"""
# Serialises creating the function across concurrent onboardings ("hist" in ASCII).
HISTORY_FUNCTION_LOCK = 0x68697374

# The schema's history triggers, with the function each calls.
HISTORY_TRIGGERS = """
SELECT tg.tgname, c.relname, pg_get_triggerdef(tg.oid), p.proname
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_proc p ON p.oid = tg.tgfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE c.relnamespace = %(s)s::regnamespace AND NOT tg.tgisinternal AND pn.nspname = 'public'
  AND p.proname LIKE 'taskflow\\_history%%'
ORDER BY c.relname, tg.tgname
"""


def ensure_citus_history_function(conn: psycopg.Connection) -> None:
    """Create public.taskflow_history_citus_v1() once (inside the caller's transaction)."""
    exists = "SELECT to_regprocedure('public.taskflow_history_citus_v1()') IS NOT NULL"
    row = conn.execute(exists).fetchone()
    if row and row[0]:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (HISTORY_FUNCTION_LOCK,))
    row = conn.execute(exists).fetchone()
    if not (row and row[0]):
        conn.execute(CITUS_HISTORY_FUNCTION)


def point_history_at_citus_function(conn: psycopg.Connection, schema: str) -> int:
    """Re-create each history trigger of `schema` calling the Citus history function, keeping its
    events, transition tables and audited columns (inside the caller's transaction, before the
    schema is distributed). Returns how many triggers were re-pointed."""
    moved = 0
    for trigger, table, definition, function in conn.execute(
        HISTORY_TRIGGERS, {"s": schema}
    ).fetchall():
        if function == CITUS_HISTORY_FUNCTION_NAME:
            continue
        conn.execute(
            sql.SQL("DROP TRIGGER {} ON {}.{}").format(
                sql.Identifier(trigger), sql.Identifier(schema), sql.Identifier(table)
            )
        )
        conn.execute(definition.replace(f"{function}(", f"{CITUS_HISTORY_FUNCTION_NAME}(", 1))
        moved += 1
    return moved


def distribute_schema(conn: psycopg.Connection, schema: str) -> None:
    """Make `schema` a distributed schema on a Citus coordinator: its history triggers call the
    Citus history function, then its tables become single-shard tables placed together on one
    node (Citus picks it; `move_tenant --to-node` moves it later). Its triggers are allowed for
    this transaction only (citus.enable_unsafe_triggers)."""
    with conn.transaction():
        conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        ensure_citus_history_function(conn)
        point_history_at_citus_function(conn, schema)
        conn.execute("SELECT citus_schema_distribute(%s::regnamespace)", (schema,))


# --- The shared schema, distributed by tenant_id ---------------------------------------------------
# Its tables with tenant_id, referenced tables before the tables referring to them (Citus needs a
# foreign key's target distributed first), then by name.
SHARED_TABLES = """
WITH RECURSIVE tables AS (
  SELECT c.oid, c.relname FROM pg_class c
  WHERE c.relnamespace = %(s)s::regnamespace AND c.relkind IN ('r', 'p') AND EXISTS (
    SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %(column)s
      AND NOT a.attisdropped)
), depth (oid, level) AS (
  SELECT oid, 0 FROM tables
  UNION ALL
  SELECT con.conrelid, d.level + 1 FROM pg_constraint con JOIN depth d ON con.confrelid = d.oid
  WHERE con.contype = 'f' AND con.conrelid <> con.confrelid AND d.level < 32
)
SELECT t.relname FROM tables t JOIN depth d ON d.oid = t.oid
GROUP BY t.relname ORDER BY max(d.level), t.relname
"""

DISTRIBUTED = """
SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
WHERE c.relnamespace = %s::regnamespace
"""


def distribute_shared_tables(
    conn: psycopg.Connection, *, shard_count: int | None = None
) -> list[str]:
    """Distribute the shared schema's tables by tenant_id on a Citus coordinator, all colocated
    with the first (so a tenant's rows of every table, and their history, share a node and joins
    and foreign keys stay on it). Its history triggers call the Citus history function first.
    Tables without tenant_id (alembic_version) stay local to the coordinator. Idempotent: tables
    already distributed are left as they are. Returns the tables distributed now."""
    distributed: list[str] = []
    with conn.transaction():
        conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        # Creating colocated shards and their foreign keys in one transaction: one connection
        # per node, or Citus refuses the foreign keys between shards made on others.
        conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
        ensure_citus_history_function(conn)
        point_history_at_citus_function(conn, SHARED_SCHEMA)
        done = {str(row[0]) for row in conn.execute(DISTRIBUTED, (SHARED_SCHEMA,))}
        tables = [
            str(row[0])
            for row in conn.execute(
                SHARED_TABLES, {"s": SHARED_SCHEMA, "column": DISTRIBUTION_COLUMN}
            )
        ]
        anchor = next((t for t in tables if t in done), None)
        for table in tables:
            if table in done:
                continue
            name = f"{SHARED_SCHEMA}.{table}"
            colocate = f"{SHARED_SCHEMA}.{anchor}" if anchor else "none"
            if shard_count is not None and anchor is None:
                conn.execute(
                    "SELECT create_distributed_table(%s, %s, colocate_with => %s,"
                    " shard_count => %s)",
                    (name, DISTRIBUTION_COLUMN, colocate, shard_count),
                )
            else:
                conn.execute(
                    "SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                    (name, DISTRIBUTION_COLUMN, colocate),
                )
            anchor = anchor or table
            distributed.append(table)
    return distributed


def shared_tables_distributed(conn: psycopg.Connection) -> list[str]:
    """The shared schema's tables that are distributed (none off Citus)."""
    row = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return []
    return sorted(str(r[0]) for r in conn.execute(DISTRIBUTED, (SHARED_SCHEMA,)))
