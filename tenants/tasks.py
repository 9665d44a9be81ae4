"""Worker tasks of tenancy itself."""

from __future__ import annotations

from celery import shared_task

from tenants import row_security
from tenants.database_roles import owner_connection
from tenants.spares import refill_spares, refill_starting


@shared_task(name="tenants.tasks.refill_spares", ignore_result=True)
def refill_spare_schemas() -> int:
    """Keep SPARE_SCHEMAS template clones ready; runs after onboardings and on a schedule."""
    refill_starting()
    return refill_spares()


@shared_task(name="tenants.tasks.restore_forced_row_security")
def restore_forced_row_security() -> dict[str, list[str]]:
    """Force row-level security again where a killed node move left it off (tenants.row_security)."""
    with owner_connection(autocommit=True) as conn:
        return row_security.restore_forced_row_security(conn).restored
