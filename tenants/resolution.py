"""Tenant resolution by host name, cached in Redis and forgotten whenever a tenant or domain changes.

With a warm cache a request resolves its tenant without touching the tenant or domain tables.
Entries are keyed by the cache epoch (tenants.cache_epoch), which any change to a tenant or
domain moves, however it is made. Forgetting a host (saves, deletes, lifecycle code) writes a
tombstone of its own, whatever epoch other processes are at, read in the same round trip as the
entry; it outlives any entry written before it, and no entry is added while it stands: a request
that read the database before a suspend or a move cannot put the old state back after it. When Redis is unreachable the cache reads as
empty (control_plane.http.redis_cache) and every request resolves from the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from prometheus_client import Counter

from tenants.cache_epoch import current_epoch
from tenants.models import Domain, Tenant

CACHE_TTL_SECONDS = 300
# As long as an entry lives, so a tombstone outlives every entry written before it.
TOMBSTONE_TTL_SECONDS = CACHE_TTL_SECONDS
_TOMBSTONE = "forgotten"
# Declared here, where resolution happens (tenants never imports control_plane); exposed with
# the platform's other metrics (control_plane.observability).
RESOLUTIONS = Counter(
    "tenant_resolutions",
    "Tenant resolutions by host, by outcome: hit (Redis), miss (database), unknown (no tenant).",
    ["outcome"],
    namespace="taskflow",
)
_FIELDS = (
    "id",
    "name",
    "slug",
    "schema_name",
    "isolation",
    "status",
    "revisions",
    "api_version",
    "plan",
    "rate_limits",
)


def _key(hostname: str, epoch: int) -> str:
    return f"tenant-host:{epoch}:{hostname}"


def _forgotten(hostname: str) -> str:
    return f"tenant-host-forgotten:{hostname}"


def resolve_tenant(hostname: str) -> Tenant | None:
    """The tenant served at `hostname`, or None."""
    return resolve_tenant_and_read(hostname, ())[0]


def resolve_tenant_and_read(
    hostname: str, also: Sequence[str]
) -> tuple[Tenant | None, dict[str, Any]]:
    """The tenant served at `hostname`, and the cache entries of the keys `also` (those found),
    read in the same round trip: a request's other cache reads need not wait for one of their own
    (the bearer token's principal, control_plane.identity.principals)."""
    key, forgotten = _key(hostname, current_epoch()), _forgotten(hostname)
    found: dict[str, Any] = cache.get_many([key, forgotten, *also])
    extra = {k: found.pop(k) for k in also if k in found}
    cached = found.get(key)
    if isinstance(cached, dict) and forgotten not in found:
        _count("hit")
        return Tenant(**cached), extra
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is None:
        _count("unknown")
        return None, extra
    _count("miss")
    tenant: Tenant = domain.tenant
    if not found:  # neither cached nor forgotten
        cache.add(key, _entry(tenant), CACHE_TTL_SECONDS)
    return tenant, extra


def _entry(tenant: Tenant) -> dict[str, Any]:
    return {f: getattr(tenant, f) for f in _FIELDS}


def remember_host(hostname: str, tenant: Tenant, epoch: int) -> None:
    """Cache `tenant` at `hostname` under `epoch`, read in the same statement as the rows it was
    committed with (onboarding's activation): its first request then resolves from Redis. Added,
    never overwritten, and not under a tombstone's shadow: a later forget still wins."""
    cache.add(_key(hostname, epoch), _entry(tenant), CACHE_TTL_SECONDS)


def _count(outcome: str) -> None:
    if settings.METRICS_ENABLED:
        RESOLUTIONS.labels(outcome).inc()


def forget_hosts(*hostnames: str) -> None:
    """Tombstone these hosts, whichever epoch their entries were cached under."""
    keys = [_forgotten(h) for h in hostnames if h]
    if keys:
        cache.set_many(dict.fromkeys(keys, _TOMBSTONE), TOMBSTONE_TTL_SECONDS)


def forget_tenant(tenant: Tenant) -> None:
    """Drop every cached host of `tenant` (call after any change to it that bypasses save())."""
    forget_hosts(*Domain.objects.filter(tenant_id=tenant.pk).values_list("domain", flat=True))
