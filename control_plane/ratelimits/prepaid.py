"""A warm request's plan limits, charged in tenant resolution's own Redis round trip: a warm API
request makes one round trip in all (its tenant, its principal and its limits).

TenantMiddleware hands `read` (settings.TENANT_RESOLUTION_READER) the keys it reads: the host's
entry and tombstone, then the bearer token's principal entry and tombstone
(control_plane.identity.principals.keys_to_read_ahead). The limits depend on what those keys
hold (the tenant's id, plan and overrides, the token's id), so they cannot be known before the
read, but they can be expected: this process keeps the raw value it last read at each of these
keys (RawValues). From those it works out the tenant, the principal, the route and the limits as
the early check would (control_plane.ratelimits.warm), and sends one script that reads the keys
and charges the limits only if Redis still holds, byte for byte, the values they were worked out
from (control_plane.ratelimits.limiter.read_and_check). The request then resolves from those
same values, so what was charged is what the early check would have charged after reading; it
takes the decision from the request (PREPAID_ATTRIBUTE) and sends nothing. When anything differs
(a token's first request, a change, a new cache epoch) nothing is charged here, and the early
check or DRF's throttle charges the request in a round trip of its own, as before.

A request charged here that a layer between resolution and the early check answers itself (an
unknown TaskFlow-Version's 400) stays charged, and its response says so in its RateLimit
headers: it was still a request to a served route, and telling it apart would mean reading the
version catalogue here.

It must never charge what the early check would not: it expects only an active, non-public
tenant, a usable token of that tenant, and a route the throttle limits that serves the method.
It never lets a request in: a standing refusal (control_plane.ratelimits.memo) is not sent, and
the early check answers it. Redis unreachable: the read is a miss under the cache's breaker,
nothing is charged here, and the later check fails open and counts it (limiter).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.http import HttpRequest
from django.urls import ResolverMatch
from django_tenants.utils import get_public_schema_name

from control_plane.http.redis_cache import PooledClientRedisCache
from control_plane.identity.principals import principal_from
from control_plane.ratelimits import limiter
from control_plane.ratelimits.headers import remember
from control_plane.ratelimits.limiter import Decision, Limit
from control_plane.ratelimits.memo import REFUSALS
from control_plane.ratelimits.warm import API_PREFIX, limited_route, limits_of, serves, usable_on
from tenants.identity import Principal
from tenants.models import TenantStatus
from tenants.resolution import current_fields

# Where the charge's decision waits for the early check.
PREPAID_ATTRIBUTE = "rate_limit_prepaid"
# The keys whose values decide the limits: host entry, host tombstone, principal, its tombstone.
DECIDING_KEYS = 4
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Prepaid:
    """A charge made in the resolution round trip, and what it was worked out from."""

    tenant_id: int
    principal: Principal
    match: ResolverMatch
    limits: list[Limit]
    decision: Decision
    asked_at: float  # monotonic, before the script was sent (control_plane.ratelimits.memo)


@dataclass(frozen=True)
class _Expectation:
    tenant_id: int
    principal: Principal
    match: ResolverMatch
    limits: list[Limit]
    raw: list[bytes]  # what the deciding keys must still hold (b"": absent)


class RawValues:
    """The raw value this process last read at each deciding key, with it decoded (for this
    module's reading only: a request gets values decoded afresh). Bounded: the oldest go."""

    def __init__(self, max_entries: int = MAX_REMEMBERED) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[bytes | None, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes | None, Any] | None:
        return self._entries.get(key)

    def holds(self, key: str, raw: bytes | None) -> bool:
        """Whether `raw` is what was last read at `key`."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] == raw

    def put(self, key: str, raw: bytes | None, value: Any) -> None:
        entries = self._entries
        with self._lock:
            if len(entries) >= self.max_entries:
                entries.pop(next(iter(entries)), None)
            entries[key] = (raw, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


RAW = RawValues()


def read(request: HttpRequest, keys: list[str]) -> dict[str, Any]:
    """What cache.get_many(keys) returns, read in one round trip that also charges the
    request's plan limits when they can be expected (see the module docstring)."""
    backend: Any = caches[DEFAULT_CACHE_ALIAS]  # once: each use of the `cache` proxy looks it up
    if not isinstance(backend, PooledClientRedisCache):  # another cache backend: no scripts
        found: dict[str, Any] = backend.get_many(keys)
        return found
    guarded: dict[str, Any] = backend.guarded({}, _read, backend, request, keys)
    return guarded


def _read(backend: PooledClientRedisCache, request: HttpRequest, keys: list[str]) -> dict[str, Any]:
    expected = _expect(request, keys) if settings.RATE_LIMITS_ENABLED else None
    client = backend.client()
    make_key = backend.make_key
    stored = [make_key(key) for key in keys]
    decision: Decision | None = None
    asked_at = time.monotonic()  # before Redis reads its clock (see memo.py)
    if expected is None:
        raws: list[bytes | None] = client.mget(stored)
    else:
        raws, decision = limiter.read_and_check(client, stored, expected.raw, expected.limits)
    found: dict[str, Any] = {}
    loads = backend.loads
    for index, (key, raw) in enumerate(zip(keys, raws, strict=True)):
        if raw is not None:
            found[key] = loads(raw)
        if index < DECIDING_KEYS and not RAW.holds(key, raw):
            # A copy of its own: what the request was given may be changed by it.
            RAW.put(key, raw, None if raw is None else loads(raw))
    if expected is not None and decision is not None:
        prepaid = Prepaid(
            expected.tenant_id,
            expected.principal,
            expected.match,
            expected.limits,
            decision,
            asked_at,
        )
        setattr(request, PREPAID_ATTRIBUTE, prepaid)
        remember(request, decision)  # its headers, whichever layer answers the request
    return found


def _expect(request: HttpRequest, keys: list[str]) -> _Expectation | None:
    """The limits the early check will charge this request, if the deciding keys still hold
    what this process last read there; None when that is unknown or nothing is charged."""
    if len(keys) < DECIDING_KEYS or not request.path_info.startswith(API_PREFIX):
        return None
    seen = [RAW.get(key) for key in keys[:DECIDING_KEYS]]
    if any(s is None for s in seen):
        return None
    (_, host_entry), (_, host_tombstone), (_, entry), (_, tombstone) = seen  # type: ignore[misc]
    fields = current_fields(host_entry, host_tombstone)
    if (
        fields is None
        or fields["status"] != TenantStatus.ACTIVE
        or fields["schema_name"] == get_public_schema_name()
    ):
        return None
    principal = usable_on(principal_from(entry, tombstone), fields["id"])
    if principal is None:
        return None
    match = limited_route(None, request.path_info)  # a tenant's host: ROOT_URLCONF
    if match is None or not serves(match, request.method or "GET"):
        return None
    tenant = SimpleNamespace(
        pk=fields["id"], plan=fields["plan"], rate_limits=fields["rate_limits"]
    )
    limits = limits_of(request, tenant, principal, match)
    if REFUSALS.refusal(limits) is not None:
        return None
    raw = [b"" if s[0] is None else s[0] for s in seen]  # type: ignore[index]
    return _Expectation(fields["id"], principal, match, limits, raw)
