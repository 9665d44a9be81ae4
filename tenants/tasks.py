"""Worker tasks of tenancy itself."""

from __future__ import annotations

from celery import shared_task

from tenants.spares import refill_spares, refill_starting


@shared_task(name="tenants.tasks.refill_spares", ignore_result=True)
def refill_spare_schemas() -> int:
    """Keep SPARE_SCHEMAS template clones ready; runs after onboardings and on a schedule."""
    refill_starting()
    return refill_spares()
