"""Provisioning of a tenant's storage: its own schema (schema mode) or nothing (rls mode).

Runs as the owner role. Never called from request code: onboarding calls it from a worker.
"""

from __future__ import annotations

from django.core.management import call_command
from psycopg import sql

from tenants.models import Isolation, Tenant
from tenants.roles import app_role_name, owner_connection, use_owner_role_for_django


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


def migrate_schema_from_scratch(schema: str) -> None:
    """Create `schema` if absent and replay the Django tenant-app migrations into it (owner role)."""
    with owner_connection() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    use_owner_role_for_django()
    call_command("migrate_schemas", tenant=True, schema_name=schema, interactive=False, verbosity=0)
    grant_schema_to_app_role(schema)


def provision_storage(tenant: Tenant) -> None:
    if tenant.isolation == Isolation.SCHEMA:
        migrate_schema_from_scratch(tenant.schema_name)
