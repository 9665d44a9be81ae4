"""Periodic upkeep of TaskFlow data, run by Celery beat.

The task keeps the name it was first scheduled under (`taskflow.tasks.*`): beat's schedule and
messages already queued refer to it by that name.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from taskflow.services import purge_deleted
from tenants.binding import binding_for, tenant_session
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)


@shared_task(name="taskflow.tasks.purge_soft_deleted")
def purge_soft_deleted(retention_days: int | None = None) -> dict[str, dict[str, int]]:
    """Hard-delete rows soft-deleted longer ago than the retention, tenant by tenant.

    Each tenant gets its own bound session and transaction, so row-level security and the
    tenant's write lock apply as for any other write.
    """
    days = settings.SOFT_DELETE_RETENTION_DAYS if retention_days is None else retention_days
    older_than = timezone.now() - timedelta(days=days)
    purged: dict[str, dict[str, int]] = {}
    tenants = Tenant.objects.exclude(schema_name="public").filter(
        status__in=[TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
    )
    for tenant in tenants.iterator():
        try:
            with tenant_session(binding_for(tenant)) as session:
                counts = purge_deleted(session=session, tenant_id=tenant.pk, older_than=older_than)
        except Exception:
            # One tenant's trouble (a schema being moved, say) must not stop the others' upkeep.
            logger.exception("purge of tenant %s failed", tenant.slug)
            continue
        if any(counts.values()):
            purged[tenant.slug] = counts
    return purged
