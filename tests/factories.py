"""Plain factory functions for test data."""

from __future__ import annotations

from tenants.models import Domain, Isolation, Tenant, TenantStatus, schema_name_for


def make_tenant(
    slug: str,
    *,
    isolation: str = Isolation.SCHEMA,
    status: str = TenantStatus.ACTIVE,
    domain: str | None = None,
) -> Tenant:
    """A tenant row and its primary domain (no storage: provisioning tests make that)."""
    tenant = Tenant.objects.create(
        name=slug.title(),
        slug=slug,
        schema_name=schema_name_for(slug),
        isolation=isolation,
        status=status,
    )
    Domain.objects.create(domain=domain or f"{slug}.localhost", tenant=tenant, is_primary=True)
    return tenant
