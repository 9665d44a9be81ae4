"""Worker tasks of tenancy itself."""

from __future__ import annotations

from celery import shared_task

from tenants.spares import refill_spares


@shared_task(name="tenants.tasks.refill_spares")
def refill_spare_schemas() -> int:
    """Keep SPARE_SCHEMAS template clones ready; runs after onboardings and on a schedule."""
    return refill_spares()
