"""Tenant resolution by host name, cached in Redis and forgotten whenever a tenant or domain changes.

With a warm cache a request resolves its tenant without touching the tenant or domain tables.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

from tenants.models import Domain, Tenant

CACHE_TTL_SECONDS = 300
_FIELDS = ("id", "name", "slug", "schema_name", "isolation", "status", "revisions", "api_version")


def _key(hostname: str) -> str:
    return f"tenant-host:{hostname}"


def resolve_tenant(hostname: str) -> Tenant | None:
    """The tenant served at `hostname`, or None."""
    cached: dict[str, Any] | None = cache.get(_key(hostname))
    if cached is not None:
        return Tenant(**cached)
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is None:
        return None
    tenant: Tenant = domain.tenant
    cache.set(_key(hostname), {f: getattr(tenant, f) for f in _FIELDS}, CACHE_TTL_SECONDS)
    return tenant


def forget_hosts(*hostnames: str) -> None:
    cache.delete_many([_key(h) for h in hostnames if h])


def forget_tenant(tenant: Tenant) -> None:
    """Drop every cached host of `tenant` (call after any change to it that bypasses save())."""
    forget_hosts(*Domain.objects.filter(tenant_id=tenant.pk).values_list("domain", flat=True))
