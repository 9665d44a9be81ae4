"""Row-level security in every placement: tenant schemas get the shared schema's forced policies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Until now only `shared` had ENABLE + FORCE ROW LEVEL SECURITY; in a tenant's own schema the app
role could read and write any row, so only application code kept tenants apart there. Every
TaskFlow table carries `tenant_id` and every transaction sets `app.tenant_id`, so the same four
policies (tenant_id = app.tenant_id, for SELECT, INSERT, UPDATE, DELETE) now guard every table of
every placement: a query that names the wrong schema returns nothing (defence in depth).

The SQL is the same for every schema (policies are created only where missing, ENABLE/FORCE are
idempotent), so it compiles offline like any plan: `shared` already has them and is unchanged.
Template clones copy the flags and policies (tenants.cloning). Moves, purges and deletes of a
tenant's rows run as the owner with `app.tenant_id` set, as they already did for `shared`.
Downgrade removes them from tenant schemas only.
"""

from alembic import op

from tenants.placement import SHARED_SCHEMA

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GUARDED = (
    "projects", "tasks", "comments", "projects_history", "tasks_history", "comments_history",
)  # fmt: skip

# The same expression as 0001's shared-schema policies: nullif() makes an unset or reset setting
# mean "no tenant" (nothing visible) instead of an error on pooled connections.
TENANT_MATCHES = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint"
POLICIES = {
    "tenant_select": f"FOR SELECT USING ({TENANT_MATCHES})",
    "tenant_insert": f"FOR INSERT WITH CHECK ({TENANT_MATCHES})",
    "tenant_update": f"FOR UPDATE USING ({TENANT_MATCHES}) WITH CHECK ({TENANT_MATCHES})",
    "tenant_delete": f"FOR DELETE USING ({TENANT_MATCHES})",
}

CREATE_MISSING = """
DO $rls$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = '{table}'::regclass AND polname = '{name}') THEN
    EXECUTE $p$CREATE POLICY {name} ON {table} {definition}$p$;
  END IF;
END $rls$
"""

# `shared` keeps what 0001 gave it: only a tenant schema loses its policies going down.
DROP_OUTSIDE_SHARED = """
DO $rls$ BEGIN
  IF current_schema() <> '{shared}' THEN
    {statements}
  END IF;
END $rls$
"""


def upgrade() -> None:
    for table in GUARDED:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        for name, definition in POLICIES.items():
            op.execute(CREATE_MISSING.format(table=table, name=name, definition=definition))


def downgrade() -> None:
    for table in GUARDED:
        statements = [f"DROP POLICY IF EXISTS {name} ON {table};" for name in POLICIES]
        statements += [
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;",
        ]
        op.execute(
            DROP_OUTSIDE_SHARED.format(
                shared=SHARED_SCHEMA,
                statements="\n    ".join(f"EXECUTE $s${s}$s$;" for s in statements),
            )
        )
