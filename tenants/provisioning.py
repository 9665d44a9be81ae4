"""Provisioning of a tenant's storage: its id sequence (tenants.ids) and a clone of the template
schema, or no schema (rls mode).

Runs as the owner role, from a worker or a management command; never from request code.
"""

from __future__ import annotations

import psycopg
from django.conf import settings
from django.core.management import call_command
from psycopg import sql

from tenants.citus import is_citus
from tenants.cloning import TEMPLATE_SCHEMA, clone_schema, clone_script, read_revisions
from tenants.database_roles import app_role_name, owner_connection, use_owner_role_for_django
from tenants.distribution import distribute_schema
from tenants.ids import drop_id_sequence, ensure_id_sequence
from tenants.local_settings import bind_tenant
from tenants.models import Isolation, Tenant
from tenants.placement import SHARED_SCHEMA
from tenants.spares import take_spare


def grant_schema_to_app_role(schema: str) -> None:
    """The app role may use the schema's tables with DML rights, nothing more."""
    with owner_connection() as conn:
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {s} TO {r};"
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};"
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}"
            ).format(s=sql.Identifier(schema), r=sql.Identifier(app_role_name()))
        )


def migrate_template_schema() -> dict[str, str]:
    """Bring the template schema to the head of the Django tenant apps (management commands only).

    The Alembic TaskFlow head is applied by the caller that owns those migrations.
    """
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(TEMPLATE_SCHEMA))
        )
    use_owner_role_for_django()
    call_command(
        "migrate_schemas", tenant=True, schema_name=TEMPLATE_SCHEMA, interactive=False, verbosity=0
    )
    with owner_connection() as conn:
        return read_revisions(conn)


def ensure_shared_schema() -> None:
    """The schema rls-mode tenants share; its tables come from the TaskFlow migrations."""
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SHARED_SCHEMA))
        )
    grant_schema_to_app_role(SHARED_SCHEMA)


def provision_storage(tenant: Tenant) -> dict[str, str]:
    """Make the tenant's storage and return the revisions it is at.

    Schema mode takes a spare clone of the template when one of the current revision is ready
    (tenants.spares) and clones the template otherwise; a schema left by an earlier attempt
    that never became active is dropped first, so a retried or redelivered provisioning is
    idempotent.
    """
    # Autocommit: each step below is one script that PostgreSQL runs as one implicit
    # transaction, so no BEGIN or COMMIT round trips are added around it.
    with owner_connection(autocommit=True) as conn:
        ensure_id_sequence(conn, tenant.pk)
        if tenant.isolation != Isolation.SCHEMA:
            return read_revisions(conn, SHARED_SCHEMA)
        revisions = take_spare(conn, tenant.schema_name) if settings.SPARE_SCHEMAS else None
        if revisions is None:
            revisions = clone_schema(
                conn, tenant.schema_name, grant_to=app_role_name(), replace_existing=True
            )
        if settings.CITUS_DISTRIBUTE_SCHEMAS and is_citus(conn):
            distribute_schema(conn, tenant.schema_name)
        return revisions


def warm_up() -> None:
    """Do at worker start what the first onboarding would otherwise pay for.

    Generates the template's clone script (a catalog scan of tens of milliseconds with many
    schemas) and learns which revision tables the template and the shared schema have.
    """
    with owner_connection(autocommit=True) as conn:
        clone_script(conn)
        read_revisions(conn, SHARED_SCHEMA)


def drop_storage(tenant: Tenant) -> None:
    """Remove the tenant's data: its schema, or its rows in the shared schema. Callers decide
    when data may go."""
    with owner_connection() as conn:
        if tenant.isolation == Isolation.SCHEMA:
            drop_schema(conn, tenant.schema_name)
        else:
            delete_shared_rows(conn, tenant.pk)
        drop_id_sequence(conn, tenant.pk)


def delete_shared_rows(conn: psycopg.Connection, tenant_id: int) -> None:
    """Delete every row of `tenant_id` from the shared schema, children first, in one transaction.

    Row-level security is forced even for the owner, so the tenant is set for the transaction.
    History rows go too: a purged tenant leaves nothing behind.
    """
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (SHARED_SCHEMA,),
        )
    ]
    with conn.transaction():
        conn.execute(bind_tenant(tenant_id))
        # Parents' ON DELETE CASCADE removes children; history tables have no foreign keys.
        for table in sorted(tables, key=lambda t: (t.endswith("_history"), t != "projects")):
            conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE tenant_id = %s").format(
                    sql.Identifier(SHARED_SCHEMA), sql.Identifier(table)
                ),
                (tenant_id,),
            )


def drop_schema(conn: psycopg.Connection, schema: str) -> None:
    assert schema.startswith("t_"), f"refusing to drop non-tenant schema {schema!r}"
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
