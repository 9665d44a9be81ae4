"""Plain helpers for migrator, fan-out and browser tests: script directories, tenants, state.

Extra Alembic revisions live in a temporary copy of migrations_sqla/versions (never in the
real one), stacked on the real head; migrators and runs point at it with `script_location`.
Tests start from BASE_REVISION (the real head), go up to TEST_REVISION (and TEST_REVISION_2)
and back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from psycopg import sql

from migrations_sqla.migrator import SchemaMigrator, Target, owner_engine, platform_schemas
from migrations_sqla.scripts import head_revision, pending_contract_steps
from tenants.cloning import clone_schema
from tenants.database_roles import app_role_name, owner_connection
from tenants.ids import drop_id_sequence, ensure_id_sequence
from tenants.models import Isolation, Tenant, TenantStatus, schema_name_for
from tenants.provisioning import delete_shared_rows

ROOT = Path(__file__).resolve().parents[2]
BASE_REVISION = head_revision()
TEST_REVISION = "fx01"
TEST_REVISION_2 = "fx02"

REVISION_ESTIMATE = '''"""Test revision: a nullable column and an index on tasks.

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("estimate", sa.Integer(), nullable=True))
    op.create_index("tasks_estimate", "tasks", ["estimate"])
{sleep}

def downgrade() -> None:
    op.drop_index("tasks_estimate", table_name="tasks")
    op.drop_column("tasks", "estimate")
'''

REVISION_EFFORT = '''"""Test revision: a column, and an index built CONCURRENTLY (a non-transactional step).

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None

non_transactional_upgrade = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_effort ON {schema}.tasks (effort)",
)
non_transactional_downgrade = ("DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_effort",)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("effort", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "effort")
'''


def make_script_dir(path: Path, *, sleep_ms: int = 0, with_second: bool = False) -> str:
    """A copy of migrations_sqla's versions plus TEST_REVISION (and TEST_REVISION_2) on top."""
    versions = path / "versions"
    versions.mkdir(parents=True)
    # Test revisions stack on the released head: pending contract steps stay out of the copy.
    pending = {Path(step.path).name for step in pending_contract_steps()}
    for script in (ROOT / "migrations_sqla" / "versions").glob("*.py"):
        if script.name not in pending:
            shutil.copy(script, versions)
    sleep = f'    op.execute("SELECT pg_sleep({sleep_ms / 1000})")\n' if sleep_ms else ""
    estimate = render_revision(REVISION_ESTIMATE, TEST_REVISION, BASE_REVISION)
    (versions / f"{TEST_REVISION}_estimate.py").write_text(estimate.replace("{sleep}", sleep))
    if with_second:
        effort = render_revision(REVISION_EFFORT, TEST_REVISION_2, TEST_REVISION)
        (versions / f"{TEST_REVISION_2}_effort.py").write_text(effort)
    return str(path)


def render_revision(template: str, revision: str, down_revision: str) -> str:
    return template.replace("{revision}", revision).replace("{down_revision}", down_revision)


def set_template(location: str, revision: str = BASE_REVISION) -> None:
    """Move the template (and the shared schema, once it exists) to `revision`.

    Tests start from BASE_REVISION and leave the platform schemas there for the next one.
    """
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, Target(alembic=revision, django=None, location=location))
        for schema in platform_schemas(migrator.connection):
            outcome = migrator.migrate(schema)
            assert outcome.ok, outcome.error


def make_tenants(prefix: str, count: int) -> list[Tenant]:
    """Active schema-mode tenants, each a clone of the template (one owner connection)."""
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(
                name=f"{prefix} {i}",
                slug=f"{prefix}{i:04d}",
                schema_name=schema_name_for(f"{prefix}{i:04d}"),
                isolation=Isolation.SCHEMA,
                status=TenantStatus.ACTIVE,
            )
            for i in range(count)
        ]
    )
    revisions: dict[str, str] = {}
    with owner_connection(autocommit=True) as conn:
        for tenant in tenants:
            revisions = clone_schema(conn, tenant.schema_name, grant_to=app_role_name())
            ensure_id_sequence(conn, tenant.pk)
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).update(revisions=revisions)
    return list(Tenant.objects.filter(pk__in=[t.pk for t in tenants]).order_by("slug"))


def drop_tenants(slug_prefix: str) -> None:
    """Every tenant of the prefix gone with its data: schemas dropped ten at a time, rls tenants'
    rows deleted from `shared` (left there, their per-tenant ids would collide with later
    tenants' and make the shared schema's way down past 0006 impossible), id sequences dropped."""
    tenants = list(Tenant.objects.filter(slug__startswith=slug_prefix))
    names = [sql.Identifier(t.schema_name) for t in tenants if t.isolation == Isolation.SCHEMA]
    with owner_connection(autocommit=True) as conn:
        for start in range(0, len(names), 10):
            chunk = sql.SQL(", ").join(names[start : start + 10])
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(chunk))
        for tenant in tenants:
            if tenant.isolation == Isolation.RLS:
                delete_shared_rows(conn, tenant.pk)
            drop_id_sequence(conn, tenant.pk)
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).delete()


def schema_state(schemas: list[str]) -> dict[str, tuple[str | None, bool]]:
    """Each schema's Alembic revision and whether tasks.estimate exists, in one query."""
    query = """
        SELECT n.nspname,
               (xpath('/row/v/text()', query_to_xml(
                   format('SELECT version_num AS v FROM %%I.alembic_version', n.nspname),
                   false, true, '')))[1]::text,
               EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                       WHERE c.relnamespace = n.oid AND c.relname = 'tasks'
                         AND a.attname = 'estimate' AND NOT a.attisdropped)
        FROM pg_namespace n WHERE n.nspname = ANY(%s)
    """
    with owner_connection() as conn:
        rows = conn.execute(query, (schemas,)).fetchall()
    return {name: (rev, has) for name, rev, has in rows}


def effort_index(schema: str) -> bool | None:
    """Whether the schema's tasks_effort index is valid; None when there is none."""
    with owner_connection() as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'tasks_effort'",
            (schema,),
        ).fetchone()
    return None if row is None else bool(row[0])


def break_tenant(schema: str) -> None:
    """Make TEST_REVISION fail in this schema: the column it adds is already there."""
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {}.tasks ADD COLUMN estimate text").format(sql.Identifier(schema))
        )


def mend_tenant(schema: str) -> None:
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {}.tasks DROP COLUMN estimate").format(sql.Identifier(schema))
        )
