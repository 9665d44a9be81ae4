"""Tenant resolution by host name, cached in Redis and forgotten whenever a tenant or domain changes.

With a warm cache a request resolves its tenant without touching the tenant or domain tables.
Entries are keyed by the cache epoch (tenants.cache_epoch), which changes to a tenant or domain
that decide how a host resolves move, however they are made. Forgetting a host (saves, deletes,
lifecycle code) writes a tombstone of its own, whatever epoch other processes are at, read in
the same round trip as the entry (tenants.tombstones): until the change commits no entry is
added, so a request that read the database before a suspend or a move cannot put the old state
back after it; once it has committed, the next request refills the entry, stamped with the
tombstone, and later requests hit again. When Redis is unreachable the cache reads as empty
(control_plane.http.redis_cache) and every request resolves from the database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache
from prometheus_client import Counter

from tenants import tombstones
from tenants.cache_epoch import current_epoch
from tenants.models import Domain, Tenant

CACHE_TTL_SECONDS = 300
# Outlives every unstamped entry written before it (tenants.tombstones).
TOMBSTONE_TTL_SECONDS = tombstones.tombstone_ttl(CACHE_TTL_SECONDS)
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


# A host name as it may stand in a cache key: short, and only characters no cache backend
# rejects. Any other (a fuzzed or hostile Host header) is keyed by its digest instead.
_KEY_SAFE_HOST = re.compile(r"[a-z0-9.:\[\]_-]{1,200}")
# What reads the cache for resolve_tenant_and_read: the cache's get_many, or a reader that does
# more in the same round trip (TenantMiddleware, settings.TENANT_RESOLUTION_READER).
Reader = Callable[[list[str]], dict[str, Any]]


def key_part(hostname: str) -> str:
    """`hostname` as a cache key part: itself when short and plain, else a digest of it, so a
    key never passes the length or characters caches accept (a Host header is the client's)."""
    if _KEY_SAFE_HOST.fullmatch(hostname):
        return hostname
    return "sha256-" + hashlib.sha256(hostname.encode("utf-8", "surrogatepass")).hexdigest()


def _key(hostname: str, epoch: int) -> str:
    # ":2:", the entry's shape (stamp, fields): the release before cached the fields alone.
    return f"tenant-host:2:{epoch}:{key_part(hostname)}"


def _forgotten(hostname: str) -> str:
    return f"tenant-host-forgotten:{key_part(hostname)}"


def host_keys(hostname: str) -> tuple[str, str]:
    """The cache keys resolution reads first for `hostname`: its entry and its tombstone."""
    return _key(hostname, current_epoch()), _forgotten(hostname)


def current_fields(entry: Any, tombstone: Any) -> dict[str, Any] | None:
    """The tenant fields of a host's cache entry read beside `tombstone`, or None when the entry
    is absent or not current (tenants.tombstones)."""
    if isinstance(entry, tuple) and tombstones.is_current(entry[0], tombstone):
        fields: dict[str, Any] = entry[1]
        return fields
    return None


def resolve_tenant(hostname: str) -> Tenant | None:
    """The tenant served at `hostname`, or None."""
    return resolve_tenant_and_read(hostname, ())[0]


def resolve_tenant_and_read(
    hostname: str, also: Sequence[str], read: Reader | None = None
) -> tuple[Tenant | None, dict[str, Any]]:
    """The tenant served at `hostname`, and the cache entries of the keys `also` (those found),
    read in the same round trip: a request's other cache reads need not wait for one of their own
    (the bearer token's principal, control_plane.identity.principals).

    `read` is given [entry, tombstone, *also] and returns what it found, as cache.get_many does
    (its default)."""
    key, forgotten = host_keys(hostname)
    found: dict[str, Any] = (read or cache.get_many)([key, forgotten, *also])
    extra = {k: found.pop(k) for k in also if k in found}
    tombstone = found.get(forgotten)
    fields = current_fields(found.get(key), tombstone)
    if fields is not None:
        _count("hit")
        return Tenant(**fields), extra
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is None:
        _count("unknown")
        return None, extra
    _count("miss")
    tenant: Tenant = domain.tenant
    cacheable, stamp = tombstones.fill_stamp(tombstone)
    if cacheable:
        cache.set(key, (stamp, _entry(tenant)), CACHE_TTL_SECONDS)
    return tenant, extra


def _entry(tenant: Tenant) -> dict[str, Any]:
    return {f: getattr(tenant, f) for f in _FIELDS}


def remember_host(hostname: str, tenant: Tenant, epoch: int) -> None:
    """Cache `tenant` at `hostname` under `epoch`, read in the same statement as the rows it was
    committed with (onboarding's activation): its first request then resolves from Redis. Added,
    never overwritten, and unstamped: read only while no tombstone stands, so any forget, earlier
    or later, wins (tenants.tombstones)."""
    cache.add(_key(hostname, epoch), (None, _entry(tenant)), CACHE_TTL_SECONDS)


# Each outcome's series, as .labels() returned it (asking again costs a lock and a lookup).
_resolution_series: dict[str, Any] = {}


def _count(outcome: str) -> None:
    if settings.METRICS_ENABLED:
        series = _resolution_series.get(outcome)
        if series is None:
            series = _resolution_series[outcome] = RESOLUTIONS.labels(outcome)
        series.inc()


def forget_hosts(*hostnames: str) -> None:
    """Tombstone these hosts, whichever epoch their entries were cached under, now and again
    (settled) once the transaction commits: the next request after the commit refills them."""
    tombstones.forget([_forgotten(h) for h in hostnames if h], CACHE_TTL_SECONDS)


def forget_tenant(tenant: Tenant) -> None:
    """Drop every cached host of `tenant` (call after any change to it that bypasses save())."""
    forget_hosts(*Domain.objects.filter(tenant_id=tenant.pk).values_list("domain", flat=True))
