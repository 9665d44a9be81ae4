"""TaskFlow tables: projects, tasks, comments, their history, and the history triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Runs with search_path set (transaction-locally) to the schema being migrated: table names carry
no schema. The one history trigger function lives in public and serves every schema and table.
"""

from collections.abc import Iterable

from alembic import op

from tenants.placement import SHARED_SCHEMA

revision = "0001"
down_revision = None
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

# Statement-level, with transition tables: one bulk statement or COPY writes its history in one
# set-based INSERT. The changed-values expression is generated from the trigger's column list
# (TG_ARGV), which costs a few microseconds a row, unlike jsonb_each over to_jsonb(row).
HISTORY_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.taskflow_history() RETURNS trigger
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
    SELECT string_agg(format('%L, CASE WHEN n.%I IS NOT NULL THEN jsonb_build_array(NULL, to_jsonb(n.%I)) END', c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id, request_id)
       SELECT n.tenant_id, n.id, ''insert'', n.version, jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2
       FROM new_rows n', history, changes) USING actor, request;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT string_agg(format('%L, CASE WHEN o.%I IS DISTINCT FROM n.%I THEN jsonb_build_array(to_jsonb(o.%I), to_jsonb(n.%I)) END', c, c, c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id, request_id)
       SELECT n.tenant_id, n.id,
              CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN ''soft_delete''
                   WHEN o.deleted_at IS NOT NULL AND n.deleted_at IS NULL THEN ''restore''
                   ELSE ''update'' END,
              n.version, jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2
       FROM old_rows o JOIN new_rows n ON n.id = o.id', history, changes) USING actor, request;
  ELSE
    SELECT string_agg(format('%L, CASE WHEN o.%I IS NOT NULL THEN jsonb_build_array(to_jsonb(o.%I), NULL) END', c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id, request_id)
       SELECT o.tenant_id, o.id, ''delete'', o.version, jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2
       FROM old_rows o', history, changes) USING actor, request;
  END IF;
  RETURN NULL;
END
$fn$;
"""

TABLES = """
CREATE TABLE projects (
  id bigint PRIMARY KEY DEFAULT nextval('public.taskflow_id_seq'),
  tenant_id bigint NOT NULL,
  key varchar(20) NOT NULL,
  name varchar(200) NOT NULL,
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  version integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX projects_key_live ON projects (tenant_id, key) WHERE deleted_at IS NULL;
-- (tenant_id, id) is what children reference, so a row can never point into another tenant.
ALTER TABLE projects ADD CONSTRAINT projects_tenant_id_key UNIQUE (tenant_id, id);
CREATE INDEX projects_created_live ON projects (tenant_id, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE tasks (
  id bigint PRIMARY KEY DEFAULT nextval('public.taskflow_id_seq'),
  tenant_id bigint NOT NULL,
  project_id bigint NOT NULL,
  external_id varchar(100),
  title varchar(500) NOT NULL,
  description text NOT NULL DEFAULT '',
  status varchar(20) NOT NULL DEFAULT 'todo'
    CONSTRAINT tasks_status_valid CHECK (status IN ('todo', 'in_progress', 'done', 'cancelled')),
  priority smallint NOT NULL DEFAULT 2 CONSTRAINT tasks_priority_range CHECK (priority BETWEEN 0 AND 4),
  assignee_id bigint,
  due_date date,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  version integer NOT NULL DEFAULT 1,
  CONSTRAINT tasks_external_id_key UNIQUE (tenant_id, external_id),
  CONSTRAINT tasks_tenant_id_key UNIQUE (tenant_id, id),
  CONSTRAINT tasks_project_fkey FOREIGN KEY (tenant_id, project_id)
    REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tasks_created_live ON tasks (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_updated_live ON tasks (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_due_live ON tasks (tenant_id, coalesce(due_date, 'infinity'::date), id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_priority_live ON tasks (tenant_id, priority, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_title_live ON tasks (tenant_id, title, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_project_live ON tasks (tenant_id, project_id, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_assignee_live ON tasks (tenant_id, assignee_id, id) WHERE deleted_at IS NULL;

CREATE TABLE comments (
  id bigint PRIMARY KEY DEFAULT nextval('public.taskflow_id_seq'),
  tenant_id bigint NOT NULL,
  task_id bigint NOT NULL,
  author_id bigint NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  version integer NOT NULL DEFAULT 1,
  CONSTRAINT comments_task_fkey FOREIGN KEY (tenant_id, task_id)
    REFERENCES tasks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX comments_task_live ON comments (tenant_id, task_id, id) WHERE deleted_at IS NULL;
"""

HISTORY_TABLE = """
CREATE TABLE {table}_history (
  id bigint PRIMARY KEY DEFAULT nextval('public.taskflow_id_seq'),
  tenant_id bigint NOT NULL,
  row_id bigint NOT NULL,
  operation varchar(12) NOT NULL,
  version integer,
  changes jsonb NOT NULL,
  actor_id bigint,
  request_id varchar(64),
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {table}_history_row ON {table}_history (tenant_id, row_id, id);
CREATE TRIGGER {table}_history_insert AFTER INSERT ON {table}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.taskflow_history({columns});
CREATE TRIGGER {table}_history_update AFTER UPDATE ON {table}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.taskflow_history({columns});
CREATE TRIGGER {table}_history_delete AFTER DELETE ON {table}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION public.taskflow_history({columns});
"""


# In the shared schema every row is guarded by row-level security: a statement sees and writes
# only the rows of the tenant set (transaction-locally) in app.tenant_id. nullif() makes an unset
# or reset setting mean "no tenant" (nothing visible) instead of an error on pooled connections.
TENANT_MATCHES = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint"
RLS_POLICIES = f"""
ALTER TABLE {{table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{table}} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON {{table}} FOR SELECT USING ({TENANT_MATCHES});
CREATE POLICY tenant_insert ON {{table}} FOR INSERT WITH CHECK ({TENANT_MATCHES});
CREATE POLICY tenant_update ON {{table}} FOR UPDATE USING ({TENANT_MATCHES}) WITH CHECK ({TENANT_MATCHES});
CREATE POLICY tenant_delete ON {{table}} FOR DELETE USING ({TENANT_MATCHES});
"""


def shared_schema_only(scripts: Iterable[str]) -> str:
    """A DO block running each statement of `scripts` only when migrating the shared schema."""
    statements = [s.strip() for script in scripts for s in script.split(";\n") if s.strip()]
    body = " ".join(f"EXECUTE $sql${s.rstrip(';')}$sql$;" for s in statements)
    return f"DO $do$ BEGIN IF current_schema() = '{SHARED_SCHEMA}' THEN {body} END IF; END $do$"


def upgrade() -> None:
    # One id sequence for every TaskFlow table in every placement: ids never collide between
    # tenants or schemas, so a tenant moves between placements with its ids (and its history's
    # references to them) unchanged.
    op.execute("CREATE SEQUENCE IF NOT EXISTS public.taskflow_id_seq AS bigint")
    # Created once (by the template, which every fan-out migrates first); later schemas skip it,
    # so concurrent tenant migrations never race to replace the shared function.
    op.execute(
        "DO $do$ BEGIN IF to_regprocedure('public.taskflow_history()') IS NULL THEN "
        + "EXECUTE "
        + "$body$"
        + HISTORY_FUNCTION
        + "$body$"
        + "; END IF; END $do$"
    )
    op.execute(TABLES)
    for table, columns in AUDITED.items():
        quoted = ", ".join(f"'{c}'" for c in columns)
        op.execute(HISTORY_TABLE.format(table=table, columns=quoted))
    # Decided in SQL, not by reading the database here: the revision then compiles offline (one
    # round trip per schema, as every plan) instead of running through Alembic online.
    op.execute(shared_schema_only(
        RLS_POLICIES.format(table=t) + RLS_POLICIES.format(table=f"{t}_history") for t in AUDITED
    ))  # fmt: skip


def downgrade() -> None:
    op.execute(
        "DROP TABLE comments_history, tasks_history, projects_history, comments, tasks, projects"
    )
