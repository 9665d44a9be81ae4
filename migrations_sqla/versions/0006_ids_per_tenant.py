"""Ids per tenant: each tenant draws its ids from a sequence of its own, keyed by (tenant_id, id).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Until now every TaskFlow table in every placement took ids from `public.taskflow_id_seq`, one
sequence for the whole platform: the gap between two of a tenant's creates told it how many
rows (and history entries) every other tenant wrote in between. Now:

- Every tenant has its own sequence, `public.tenant_<tenant id>_ids`, made by provisioning
  (tenants.provisioning) and dropped with the tenant's storage. The sequence belongs to the
  tenant, not to a placement: a move between its own schema and the shared one changes nothing
  about it, so rows keep their ids and later creates continue where the tenant left off.
- Every id column (projects, tasks, comments and their history) defaults to
  `public.taskflow_next_id()`, which draws from the sequence of the tenant the transaction is
  bound to (`app.tenant_id`, set by every bound session). Without a tenant it gives NULL and
  row-level security refuses the row, as before.
- Ids are unique per tenant only, so the primary keys of projects, tasks and comments become
  (tenant_id, id) (history tables have been keyed (tenant_id, row_id, id) since 0003). That is
  also the key a distribution by tenant_id (Citus) needs. The unique (tenant_id, id)
  constraints that children's foreign keys referenced are the primary keys now: the foreign
  keys are re-pointed to them.
- Existing ids stay as they are: clients hold them. Existing tenants' sequences start past the
  platform sequence's last value, which is past every id any tenant holds, so no id can repeat
  and no table needs reading. That first jump shows once what the old sequence had reached;
  from then on a tenant's ids advance only with its own writes. `public.taskflow_id_seq` stays
  (the downgrade returns to it).

The sequences are created for every tenant recorded in `public.tenants_tenant` that lacks one,
by the first schema this revision reaches (the template, which a fan-out migrates first); under
a transaction-level advisory lock, so concurrent schema migrations never race to create one.

The key swap builds one index per table inside the schema's transaction: writes to that
schema's tables wait for it (in the shared schema, every rls tenant's writes do), like 0003's.
The re-pointed foreign keys are added NOT VALID and validated after the commit (a
non-transactional step), so checking the existing rows blocks no writes.

Downgrade re-points the defaults to the platform sequence, first advanced past the sequences of
the schema's tenants, and restores the (id) keys; it fails (could not create unique index) when
per-tenant ids already repeat across the tenants of the shared schema, and leaves the tenants'
sequences in place. Upgrading again moves the schema's tenants' sequences up to the platform
sequence, past the ids it gave in between.
"""

from alembic import op

from tenants.placement import SHARED_SCHEMA

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROWS = ("projects", "tasks", "comments")
HISTORY = ("projects_history", "tasks_history", "comments_history")
RLS = "rls"  # tenants.models.Isolation.RLS, as recorded in public.tenants_tenant
ADVISORY_LOCK = 0x6964  # "id": serialises creating tenants' sequences across schema migrations

# One SQL expression, so the planner inlines it into the column default: a bulk insert pays
# about what a plain nextval costs (a function it cannot inline cost ~5x per row). The tenant id
# is cast to bigint, so the name is digits only. Without a tenant the name is NULL, nextval
# (strict) gives NULL, and row-level security refuses the row, as before.
NEXT_ID_FUNCTION = r"""
CREATE FUNCTION public.taskflow_next_id() RETURNS bigint
LANGUAGE sql VOLATILE AS $fn$
  SELECT nextval(('public.tenant_'
    || nullif(current_setting('app.tenant_id', true), '')::bigint || '_ids')::regclass)
$fn$;
"""


# Each recorded tenant (but `public`) without a sequence gets one, starting past every id the
# platform sequence ever gave. Checked before the lock, so schemas after the first take none.
CREATE_TENANT_SEQUENCES = """
DO $ids$ DECLARE t bigint; BEGIN
  IF to_regclass('public.tenants_tenant') IS NULL THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.tenants_tenant
                 WHERE schema_name <> 'public'
                   AND to_regclass(format('public.%I', 'tenant_' || id || '_ids')) IS NULL) THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock({lock});
  FOR t IN SELECT id FROM public.tenants_tenant
           WHERE schema_name <> 'public'
             AND to_regclass(format('public.%I', 'tenant_' || id || '_ids')) IS NULL
           ORDER BY id LOOP
    EXECUTE format('CREATE SEQUENCE public.%I AS bigint START %s', 'tenant_' || t || '_ids',
                   (SELECT last_value + 1 FROM public.taskflow_id_seq));
  END LOOP;
END $ids$
"""

# (tenant_id, id) becomes the key; the foreign keys move from the unique constraints to it.
SWAP_KEYS = """
CREATE UNIQUE INDEX projects_pkey_tenant ON projects (tenant_id, id);
CREATE UNIQUE INDEX tasks_pkey_tenant ON tasks (tenant_id, id);
CREATE UNIQUE INDEX comments_pkey_tenant ON comments (tenant_id, id);
ALTER TABLE comments DROP CONSTRAINT comments_task_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_project_fkey;
ALTER TABLE projects DROP CONSTRAINT projects_tenant_id_key;
ALTER TABLE tasks DROP CONSTRAINT tasks_tenant_id_key;
ALTER TABLE projects DROP CONSTRAINT projects_pkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE comments DROP CONSTRAINT comments_pkey;
ALTER TABLE projects ADD CONSTRAINT projects_pkey PRIMARY KEY USING INDEX projects_pkey_tenant;
ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY USING INDEX tasks_pkey_tenant;
ALTER TABLE comments ADD CONSTRAINT comments_pkey PRIMARY KEY USING INDEX comments_pkey_tenant;
ALTER TABLE tasks ADD CONSTRAINT tasks_project_fkey FOREIGN KEY (tenant_id, project_id)
  REFERENCES projects (tenant_id, id) ON DELETE CASCADE NOT VALID;
ALTER TABLE comments ADD CONSTRAINT comments_task_fkey FOREIGN KEY (tenant_id, task_id)
  REFERENCES tasks (tenant_id, id) ON DELETE CASCADE NOT VALID;
"""

# After the commit, without blocking the schema's writes (SHARE UPDATE EXCLUSIVE): the rows were
# checked by the identical foreign keys just replaced, and new rows are checked already; this
# marks the constraints valid. Validating a valid constraint does nothing, so a re-run is safe.
non_transactional_upgrade = (
    "ALTER TABLE {schema}.tasks VALIDATE CONSTRAINT tasks_project_fkey",
    "ALTER TABLE {schema}.comments VALIDATE CONSTRAINT comments_task_fkey",
)

RESTORE_KEYS = """
ALTER TABLE comments DROP CONSTRAINT comments_task_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_project_fkey;
ALTER TABLE projects DROP CONSTRAINT projects_pkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE comments DROP CONSTRAINT comments_pkey;
ALTER TABLE projects ADD PRIMARY KEY (id);
ALTER TABLE tasks ADD PRIMARY KEY (id);
ALTER TABLE comments ADD PRIMARY KEY (id);
ALTER TABLE projects ADD CONSTRAINT projects_tenant_id_key UNIQUE (tenant_id, id);
ALTER TABLE tasks ADD CONSTRAINT tasks_tenant_id_key UNIQUE (tenant_id, id);
ALTER TABLE tasks ADD CONSTRAINT tasks_project_fkey FOREIGN KEY (tenant_id, project_id)
  REFERENCES projects (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE comments ADD CONSTRAINT comments_task_fkey FOREIGN KEY (tenant_id, task_id)
  REFERENCES tasks (tenant_id, id) ON DELETE CASCADE;
"""

# The tenants whose rows this schema holds: its own tenant, or every rls tenant in `shared`.
TENANTS_HERE = (
    "SELECT id FROM public.tenants_tenant WHERE schema_name <> 'public'"  # noqa: S608 - constants
    " AND (schema_name = current_schema()"
    f" OR (current_schema() = '{SHARED_SCHEMA}' AND isolation = '{RLS}'))"
)

# Run after the DDL, so this schema's writers wait on its locks meanwhile: a sequence of a
# tenant here that is behind the platform sequence moves up to it. On a first upgrade that
# changes nothing (new sequences start there); after a downgrade and upgrade again, the
# platform sequence gave the rows written in between their ids, and the tenant's must not
# repeat them.
CATCH_UP_WITH_PLATFORM = f"""
DO $ids$ DECLARE t bigint; s regclass; platform bigint; BEGIN
  IF to_regclass('public.tenants_tenant') IS NULL THEN
    RETURN;
  END IF;
  platform := coalesce(pg_sequence_last_value('public.taskflow_id_seq'), 0);
  FOR t IN {TENANTS_HERE} LOOP
    s := to_regclass(format('public.%I', 'tenant_' || t || '_ids'));
    IF s IS NOT NULL AND coalesce(pg_sequence_last_value(s), 0) < platform THEN
      PERFORM setval(s, platform);
    END IF;
  END LOOP;
END $ids$
"""

# The platform sequence moves past every id this schema's tenants' sequences gave, so going
# back repeats none of them.
ADVANCE_PLATFORM_SEQUENCE = f"""
DO $ids$ DECLARE top bigint := 0; s regclass; t bigint; BEGIN
  IF to_regclass('public.tenants_tenant') IS NULL THEN
    RETURN;
  END IF;
  FOR t IN {TENANTS_HERE} LOOP
    s := to_regclass(format('public.%I', 'tenant_' || t || '_ids'));
    IF s IS NOT NULL THEN
      top := greatest(top, coalesce(pg_sequence_last_value(s), 0));
    END IF;
  END LOOP;
  IF top > coalesce(pg_sequence_last_value('public.taskflow_id_seq'), 0) THEN
    PERFORM setval('public.taskflow_id_seq', top);
  END IF;
END $ids$
"""


def upgrade() -> None:
    # Created once (by the template, which every fan-out migrates first); later schemas skip it,
    # so concurrent tenant migrations never race to create it.
    op.execute(
        "DO $do$ BEGIN IF to_regprocedure('public.taskflow_next_id()') IS NULL THEN "
        + "EXECUTE "
        + "$body$"
        + NEXT_ID_FUNCTION
        + "$body$"
        + "; END IF; END $do$"
    )
    op.execute(CREATE_TENANT_SEQUENCES.format(lock=ADVISORY_LOCK))
    op.execute(SWAP_KEYS)
    for table in ROWS + HISTORY:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT public.taskflow_next_id()")
    op.execute(CATCH_UP_WITH_PLATFORM)


def downgrade() -> None:
    op.execute(ADVANCE_PLATFORM_SEQUENCE)
    for table in ROWS + HISTORY:
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('public.taskflow_id_seq')"
        )
    op.execute(RESTORE_KEYS)
