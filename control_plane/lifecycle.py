"""The end of a tenant's life: purge its data once it has been archived."""

from __future__ import annotations

from django.db import transaction

from control_plane.onboarding import OnboardingConflict
from tenants.models import Tenant, TenantStatus
from tenants.provisioning import drop_storage
from tenants.resolution import forget_tenant


def purge_tenant(tenant: Tenant) -> None:
    """Drop an archived tenant's storage and its rows in the public schema. Irreversible."""
    if tenant.status != TenantStatus.ARCHIVED:
        raise OnboardingConflict(
            f"Tenant {tenant.slug!r} is {tenant.status}; only archived tenants are purged."
        )
    forget_tenant(tenant)
    drop_storage(tenant)
    with transaction.atomic():
        tenant.delete()
