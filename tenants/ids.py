"""Each tenant's id sequence: where its TaskFlow ids come from, in whichever placement it lives.

`public.taskflow_next_id()` (migration 0006 of migrations_sqla), the default of every TaskFlow id
column, draws from `public.tenant_<tenant id>_ids` for the tenant the transaction is bound to. The
sequence belongs to the tenant rather than to its schema, so a move between placements leaves it
alone: rows keep their ids and the next create continues after the tenant's last one. Ids are
consecutive per tenant and say nothing about other tenants' writes.

Made by provisioning and dropped with the tenant's storage, as the owner role (the app role gets
USAGE on it through the owner's default privileges, platform/postgres/init.sql).
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def sequence_name(tenant_id: int) -> str:
    """The name, in `public`, of the tenant's id sequence (migration 0006 names it alike)."""
    return f"tenant_{int(tenant_id)}_ids"


def ensure_id_sequence(conn: psycopg.Connection, tenant_id: int) -> None:
    """Make the tenant's id sequence unless it exists (a retried provisioning, or migration
    0006 made it for a tenant recorded before provisioning ran). A new tenant's ids start at 1."""
    conn.execute(
        sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS bigint").format(
            sql.Identifier("public", sequence_name(tenant_id))
        )
    )


def drop_id_sequence(conn: psycopg.Connection, tenant_id: int) -> None:
    """Remove the sequence with the tenant's data: nothing of a purged tenant stays behind."""
    conn.execute(
        sql.SQL("DROP SEQUENCE IF EXISTS {}").format(
            sql.Identifier("public", sequence_name(tenant_id))
        )
    )
