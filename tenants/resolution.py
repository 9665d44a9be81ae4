"""Tenant resolution by host name, cached in Redis and forgotten whenever a tenant or domain changes.

With a warm cache a request resolves its tenant without touching the tenant or domain tables.
Entries are keyed by the cache epoch (tenants.cache_epoch), which any change to a tenant or
domain moves, however it is made. Forgetting writes a short-lived tombstone rather than deleting,
and entries are only ever added (SET NX): a request that read the database before a suspend or
a move cannot put the old state back after it. When Redis is unreachable the cache reads as
empty (control_plane.http.redis_cache) and every request resolves from the database.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

from tenants.cache_epoch import current_epoch, epochs_in_use
from tenants.models import Domain, Tenant

CACHE_TTL_SECONDS = 300
# Longer than any request takes between its database read and its cache write.
TOMBSTONE_TTL_SECONDS = 30
_TOMBSTONE = "forgotten"
_FIELDS = ("id", "name", "slug", "schema_name", "isolation", "status", "revisions", "api_version")


def _key(hostname: str, epoch: int) -> str:
    return f"tenant-host:{epoch}:{hostname}"


def resolve_tenant(hostname: str) -> Tenant | None:
    """The tenant served at `hostname`, or None."""
    key = _key(hostname, current_epoch())
    cached: Any = cache.get(key)
    if isinstance(cached, dict):
        return Tenant(**cached)
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is None:
        return None
    tenant: Tenant = domain.tenant
    if cached is None:  # not forgotten just now
        cache.add(key, {f: getattr(tenant, f) for f in _FIELDS}, CACHE_TTL_SECONDS)
    return tenant


def forget_hosts(*hostnames: str) -> None:
    """Tombstone the cached entries of these hosts."""
    keys = [_key(h, epoch) for epoch in epochs_in_use() for h in hostnames if h]
    if keys:
        cache.set_many(dict.fromkeys(keys, _TOMBSTONE), TOMBSTONE_TTL_SECONDS)


def forget_tenant(tenant: Tenant) -> None:
    """Drop every cached host of `tenant` (call after any change to it that bypasses save())."""
    forget_hosts(*Domain.objects.filter(tenant_id=tenant.pk).values_list("domain", flat=True))
