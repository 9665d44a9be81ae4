"""A warm request's plan limits, charged in tenant resolution's own Redis round trip: a warm API
request makes one round trip in all (its tenant, its principal and its limits).

TenantMiddleware hands `read` (settings.TENANT_RESOLUTION_READER) the keys it reads: the host's
entry and tombstone, then the bearer token's principal entry and tombstone
(control_plane.identity.principals.keys_to_read_ahead). The limits depend on what those keys
hold (the tenant's id, plan and overrides, the token's id), so they cannot be known before the
read; but the request before it with the same keys, method and path knew them. When the early
check (control_plane.ratelimits.early) has worked a request's limits out from values it read
here, it leaves them with this module (`learn`), with the raw bytes of the four keys they
followed from and the script that charges them, packed once (limiter.script_command). The next
such request sends those bytes: one script reads the keys and charges the limits only if Redis
still holds, byte for byte, the values they were worked out from. The request then resolves from
those same values, so what was charged is what the early check would have charged after reading;
it takes the decision from the request (PREPAID_ATTRIBUTE) and sends nothing. When anything
differs (a token's first request, a change, a new cache epoch) nothing is charged here, and the
early check or DRF's throttle charges the request in a round trip of its own and learns again.
A request that is not charged here reads with one packed MGET (control_plane.http.redis_wire).

What is learned follows from the bytes and the settings: a change of a setting (a test's
override) forgets it all. A token's expiry is checked on every use.

A request charged here that a layer between resolution and the early check answers itself (an
unknown TaskFlow-Version's 400) stays charged, and its response says so in its RateLimit
headers: it was still a request to a served route, and telling it apart would mean reading the
version catalogue here.

It must never charge what the early check would not: it learns only from the early check's own
decision for an active, non-public tenant resolved from the cache, a usable token of that tenant
from the cache, and a route the throttle limits that serves the method. It never lets a request
in: a standing refusal (control_plane.ratelimits.memo) is not sent, and the early check answers
it. Redis unreachable: the read is a miss under the cache's breaker, nothing is charged here,
and the later check fails open and counts it (limiter).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.urls import ResolverMatch

from control_plane.http.redis_cache import PooledClientRedisCache
from control_plane.http.redis_wire import pack
from control_plane.ratelimits import limiter
from control_plane.ratelimits.headers import remember
from control_plane.ratelimits.limiter import Decision, Limit
from control_plane.ratelimits.memo import REFUSALS
from control_plane.ratelimits.warm import API_PREFIX
from tenants.identity import Principal
from tenants.resolution import current_fields

# Where the charge's decision waits for the early check.
PREPAID_ATTRIBUTE = "rate_limit_prepaid"
# Where the read leaves what the early check needs to learn from the request.
READ_ATTRIBUTE = "rate_limit_read"
# The keys whose values decide the limits: host entry, host tombstone, principal, its tombstone.
DECIDING_KEYS = 4
MAX_LEARNED = 10_000

LearnedKey = tuple[tuple[str, ...], str, str]  # the keys read, the method, the path


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
class Learned:
    """A request's limits, what they were worked out from, and the script that charges them."""

    tenant_id: int
    principal: Principal
    match: ResolverMatch
    limits: list[Limit]
    expires_at: float | None  # the token's expiry (epoch seconds)
    command: bytes  # reads the keys, expects the bytes, charges the limits (one EVALSHA)


@dataclass(frozen=True)
class Read:
    """What this module read for a request: its learned key, the stored key names, the raw
    values of the deciding keys (None: absent), and the host's entry and tombstone decoded."""

    key: LearnedKey
    stored: list[str]
    raw: list[bytes | None]
    host_entry: Any
    host_tombstone: Any


class LearnedCharges:
    """Learned charges by (keys, method, path). Bounded: the oldest go."""

    def __init__(self, max_entries: int = MAX_LEARNED) -> None:
        self.max_entries = max_entries
        self._entries: dict[LearnedKey, Learned] = {}
        self._lock = threading.Lock()

    def get(self, key: LearnedKey) -> Learned | None:
        return self._entries.get(key)

    def put(self, key: LearnedKey, learned: Learned) -> None:
        entries = self._entries
        with self._lock:
            if key not in entries and len(entries) >= self.max_entries:
                entries.pop(next(iter(entries)), None)
            entries[key] = learned

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


LEARNED = LearnedCharges()


def _forget_on_setting_change(**_: Any) -> None:
    LEARNED.clear()  # quotas, window, key prefix and token share decide the limits


setting_changed.connect(_forget_on_setting_change)


def read(request: HttpRequest, keys: list[str]) -> dict[str, Any]:
    """What cache.get_many(keys) returns, read in one round trip that also charges the
    request's plan limits when they were learned (see the module docstring)."""
    backend: Any = caches[DEFAULT_CACHE_ALIAS]  # once: each use of the `cache` proxy looks it up
    if not isinstance(backend, PooledClientRedisCache):  # another cache backend: no scripts
        found: dict[str, Any] = backend.get_many(keys)
        return found
    guarded: dict[str, Any] = backend.guarded({}, _read, backend, request, keys)
    return guarded


def _read(backend: PooledClientRedisCache, request: HttpRequest, keys: list[str]) -> dict[str, Any]:
    key: LearnedKey = (tuple(keys), request.method or "GET", request.path_info)
    learned = _usable(LEARNED.get(key)) if settings.RATE_LIMITS_ENABLED else None
    make_key = backend.make_key
    stored = [make_key(k) for k in keys]
    decision: Decision | None = None
    asked_at = time.monotonic()  # before Redis reads its clock (see memo.py)
    if learned is None:
        raws: list[bytes | None] = backend.wire().call(pack(b"MGET", *stored))
    else:
        raws, decision = limiter.read_and_check(
            backend.wire(), len(keys), learned.command, learned.limits
        )
    found: dict[str, Any] = {}
    loads = backend.loads
    for k, raw in zip(keys, raws, strict=True):
        if raw is not None:
            found[k] = loads(raw)
    if learned is not None and decision is not None:
        prepaid = Prepaid(
            learned.tenant_id, learned.principal, learned.match, learned.limits, decision, asked_at
        )
        setattr(request, PREPAID_ATTRIBUTE, prepaid)
        remember(request, decision)  # its headers, whichever layer answers the request
    elif len(keys) >= DECIDING_KEYS and request.path_info.startswith(API_PREFIX):
        read = Read(key, stored, raws[:DECIDING_KEYS], found.get(keys[0]), found.get(keys[1]))
        setattr(request, READ_ATTRIBUTE, read)
    return found


def _usable(learned: Learned | None) -> Learned | None:
    """`learned`, unless its token has expired or its limits stand refused."""
    if learned is None:
        return None
    if learned.expires_at is not None and learned.expires_at <= time.time():
        return None
    if REFUSALS.refusal(learned.limits) is not None:
        return None
    return learned


def learn(
    request: HttpRequest,
    tenant: Any,
    principal: Principal,
    expires_at: float | None,
    match: ResolverMatch,
    limits: list[Limit],
) -> None:
    """The early check worked `limits` out for this request from what `read` read: charge them
    in the read of the next request with the same keys, method and path, while the deciding keys
    hold the same bytes. Only when the tenant and the principal came from those bytes (the
    tenant's entry was current, the principal was cached): else the bytes do not decide them."""
    done: Read | None = getattr(request, READ_ATTRIBUTE, None)
    if done is None or done.raw[2] is None:  # the principal's entry
        return
    fields = current_fields(done.host_entry, done.host_tombstone)
    if fields is None or fields["id"] != tenant.pk:  # resolved from the database
        return
    expected = [b"" if raw is None else raw for raw in done.raw]
    command = limiter.script_command(done.stored, expected, limits)
    LEARNED.put(done.key, Learned(tenant.pk, principal, match, limits, expires_at, command))
