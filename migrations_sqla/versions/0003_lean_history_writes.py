"""Lean history writes: inserts store the new row once, flat; one index per history table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

What a bulk import of new rows spent on history was mostly building `changes`: a two-element
array per column, each value through to_jsonb, then jsonb_strip_nulls over the lot. Now:

- `changes_format` (a new column, smallint NOT NULL DEFAULT 1) says how `changes` is stored.
  1: the documented shape, {"col": [old, new]} for every column that changed (and for an insert
  written before this revision, {"col": [null, new]} for every non-null column). 2: an insert's
  new values once, flat, {"col": new} for every non-null column; readers present it as
  {"col": [null, new]} (taskflow.representations). Only inserts are written as 2; updates and
  deletes stay 1. Rows written before this revision keep format 1 (the column default), so they
  read as they always did, and a move between placements copies the column with the row.
- Updates build only the changed columns' pairs (an object per changed column, concatenated)
  instead of an object of every column that is then stripped of its nulls; same stored shape.
- Each history table's primary key is (tenant_id, row_id, id) instead of (id) plus a secondary
  index on (tenant_id, row_id, id): one index to write per history row instead of two. Ids still
  come from the platform-wide sequence, so they stay unique; every reader filters on tenant_id
  (and row_id): the history endpoint's keyset, moves, purges of shared-schema tenants.

The trigger function is shared by every schema, and a fan-out migrates schemas one at a time, so
`public.taskflow_history()` is left exactly as it is (schemas still at 0002 go on using it) and
this revision re-points the schema's triggers to a new `public.taskflow_history_v2()`, created
once, race-safely, like 0001's. Downgrade re-points them back, rewrites format 2 rows into the
documented shape, and restores the old keys; it leaves the v2 function for other schemas.

Building the new keys reads each history table once, inside the migration's transaction: writes
to that schema's audited tables wait for it (in the shared schema, every rls tenant's writes do).
"""

from alembic import op

from tenants.placement import SHARED_SCHEMA

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

AUDITED = {
    "projects": ("key", "name", "description", "deleted_at"),
    "tasks": (
        "project_id", "external_id", "title", "description", "status", "priority",
        "assignee_id", "due_date", "deleted_at",
    ),
    "comments": ("task_id", "author_id", "body", "deleted_at"),
}  # fmt: skip

# Same contract as public.taskflow_history() (0001): statement-level AFTER triggers with
# transition tables, the audited columns in TG_ARGV, standing down while a tenant is copied.
HISTORY_FUNCTION_V2 = r"""
CREATE FUNCTION public.taskflow_history_v2() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  history text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_history');
  actor bigint := nullif(current_setting('app.actor_id', true), '')::bigint;
  request text := nullif(current_setting('app.request_id', true), '');
  changes text;
BEGIN
  -- A tenant being moved between placements copies its history as it is, without adding to it.
  IF current_setting('app.copying_tenant', true) = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    -- changes_format 2: the new values once, {"col": new}, non-null columns only.
    SELECT string_agg(format('%L, n.%I', c, c), ', ') INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT n.tenant_id, n.id, ''insert'', n.version, jsonb_strip_nulls(jsonb_build_object(%s)), 2, $1, $2
       FROM new_rows n', history, changes) USING actor, request;
  ELSIF TG_OP = 'UPDATE' THEN
    -- changes_format 1: {"col": [old, new]}, built for the changed columns only.
    SELECT string_agg(format('CASE WHEN o.%I IS DISTINCT FROM n.%I THEN jsonb_build_object(%L, jsonb_build_array(o.%I, n.%I)) ELSE ''{}''::jsonb END', c, c, c, c, c), ' || ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT n.tenant_id, n.id,
              CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN ''soft_delete''
                   WHEN o.deleted_at IS NOT NULL AND n.deleted_at IS NULL THEN ''restore''
                   ELSE ''update'' END,
              n.version, %s, 1, $1, $2
       FROM old_rows o JOIN new_rows n ON n.id = o.id', history, changes) USING actor, request;
  ELSE
    -- changes_format 1: {"col": [old, null]}, non-null columns only.
    SELECT string_agg(format('%L, CASE WHEN o.%I IS NOT NULL THEN jsonb_build_array(o.%I, NULL) END', c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT o.tenant_id, o.id, ''delete'', o.version, jsonb_strip_nulls(jsonb_build_object(%s)), 1, $1, $2
       FROM old_rows o', history, changes) USING actor, request;
  END IF;
  RETURN NULL;
END
$fn$;
"""

TRIGGERS = """
DROP TRIGGER {table}_history_insert ON {table};
DROP TRIGGER {table}_history_update ON {table};
DROP TRIGGER {table}_history_delete ON {table};
CREATE TRIGGER {table}_history_insert AFTER INSERT ON {table}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}({columns});
CREATE TRIGGER {table}_history_update AFTER UPDATE ON {table}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION {function}({columns});
CREATE TRIGGER {table}_history_delete AFTER DELETE ON {table}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}({columns});
"""

# A column with a constant default is a catalog change: existing rows read as format 1.
UPGRADE_TABLE = """
ALTER TABLE {table}_history ADD COLUMN changes_format smallint NOT NULL DEFAULT 1
  CONSTRAINT {table}_history_changes_format_known CHECK (changes_format IN (1, 2));
CREATE UNIQUE INDEX {table}_history_key ON {table}_history (tenant_id, row_id, id);
ALTER TABLE {table}_history DROP CONSTRAINT {table}_history_pkey;
DROP INDEX {table}_history_row;
ALTER TABLE {table}_history ADD CONSTRAINT {table}_history_pkey PRIMARY KEY USING INDEX {table}_history_key;
"""

# Row-level security is forced on the shared schema's tables, for their owner too: NO FORCE for
# the rewrite, so every tenant's format 2 rows are rewritten, not only those of no tenant.
DOWNGRADE_TABLE = """
ALTER TABLE {table}_history NO FORCE ROW LEVEL SECURITY;
UPDATE {table}_history SET changes = (
    SELECT coalesce(jsonb_object_agg(key, jsonb_build_array(NULL, value)), '{{}}'::jsonb)
    FROM jsonb_each(changes) WHERE jsonb_typeof(value) <> 'null'
  )
  WHERE changes_format = 2;
ALTER TABLE {table}_history ALTER COLUMN changes_format DROP DEFAULT;
ALTER TABLE {table}_history DROP COLUMN changes_format;
ALTER TABLE {table}_history DROP CONSTRAINT {table}_history_pkey;
ALTER TABLE {table}_history ADD PRIMARY KEY (id);
CREATE INDEX {table}_history_row ON {table}_history (tenant_id, row_id, id);
"""
FORCE_RLS = "ALTER TABLE {table}_history FORCE ROW LEVEL SECURITY"


def migrating_shared_schema() -> bool:
    return op.get_bind().exec_driver_sql("SELECT current_schema()").scalar() == SHARED_SCHEMA


def _point_triggers(function: str) -> None:
    for table, columns in AUDITED.items():
        quoted = ", ".join(f"'{c}'" for c in columns)
        op.execute(TRIGGERS.format(table=table, function=function, columns=quoted))


def upgrade() -> None:
    # Created once (by the template, which every fan-out migrates first); later schemas skip it,
    # so concurrent tenant migrations never race to replace a function others use.
    op.execute(
        "DO $do$ BEGIN IF to_regprocedure('public.taskflow_history_v2()') IS NULL THEN "
        + "EXECUTE "
        + "$body$"
        + HISTORY_FUNCTION_V2
        + "$body$"
        + "; END IF; END $do$"
    )
    for table in AUDITED:
        op.execute(UPGRADE_TABLE.format(table=table))
    _point_triggers("public.taskflow_history_v2")


def downgrade() -> None:
    _point_triggers("public.taskflow_history")
    shared = migrating_shared_schema()
    for table in AUDITED:
        op.execute(DOWNGRADE_TABLE.format(table=table))
        if shared:
            op.execute(FORCE_RLS.format(table=table))
