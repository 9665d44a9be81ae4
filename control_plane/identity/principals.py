"""The principal a token authenticates as, cached in Redis so a warm request runs no auth query.

An entry is keyed by the token's digest (never the token) and holds what authentication decided:
user, tenant, role, staff, and the token's expiry, which every hit checks again. Entries live at
most ENTRY_TTL, the granularity of last_used_at: the miss that rebuilds an entry is what moves
last_used_at, so no request writes it more than once a minute.

Anything that changes whether or how a token authenticates (the token, its user, the user's
membership, the tenant) forgets the entries of the tokens concerned (control_plane.identity.principal_signals),
like the tenant-resolution cache. Forgetting writes a tombstone per token rather than deleting,
whatever epoch other processes are at, read with the entry (tenants.tombstones): until the
change commits no entry is added, so a request that read the database before the change cannot
put the old answer back; once it has committed, the next request caches the new answer,
stamped with the tombstone. Redis, not process memory: a revoke must stop the token in every
process at once.

Entries are keyed by the cache epoch (tenants.cache_epoch), which triggers move on any change to
these rows, however it is made: a revoke by QuerySet.update() or plain SQL, which sends no signal,
or one made while Redis was unreachable, stops the token once the process has seen the new epoch
(CACHE_EPOCH_CHECK_SECONDS), not when the entry expires. While Redis is unreachable the cache
reads as empty (control_plane.http.redis_cache) and every token is checked in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest

from control_plane.identity.tokens import token_digest
from tenants import tombstones
from tenants.cache_epoch import current_epoch
from tenants.identity import Principal, Role

ENTRY_TTL = timedelta(minutes=1)
# Outlives every unstamped entry written before it (tenants.tombstones).
TOMBSTONE_TTL_SECONDS = tombstones.tombstone_ttl(int(ENTRY_TTL.total_seconds()))
# remember_principal's caller did not say what tombstone it saw before its query.
_UNREAD = object()


@dataclass(frozen=True)
class CachedPrincipal:
    """What a token authenticated as, valid until `expires_at` (the token's own expiry)."""

    principal: Principal
    expires_at: datetime | None
    # Primed by onboarding (prime_principal) and not used since: the request that reads it
    # writes the token's first last_used_at (authentication), which no miss did.
    unused: bool = False

    def usable(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def _key(digest: str, epoch: int) -> str:
    # ":3:", the entry's shape (stamp first, `unused` last): ":2:" had no `unused`, the
    # release before it six fields.
    return f"principal:3:{epoch}:{digest}"


def _forgotten(digest: str) -> str:
    """The tombstone of a token, whatever epoch its entries were cached under."""
    return f"principal-forgotten:{digest}"


def cached_principal(
    digest: str, epoch: int, read_ahead: Mapping[str, Any] | None = None
) -> CachedPrincipal | None:
    """The cached entry of the token with `digest`, or None (never cached, expired, forgotten)."""
    return read_principal(digest, epoch, read_ahead)[0]


def read_principal(
    digest: str, epoch: int, read_ahead: Mapping[str, Any] | None = None
) -> tuple[CachedPrincipal | None, Any]:
    """The cached entry of the token with `digest` (or None), and the token's tombstone as read
    with it (None: none stands), which remember_principal needs to stamp what is read next.

    `epoch` is current_epoch() read before the database is: the same value goes to
    remember_principal, so an entry is never filed under an epoch newer than what it saw.
    `read_ahead` is what tenant resolution read for this request in its own round trip
    (keys_to_read_ahead); when it asked for both keys, no GET of its own is sent.
    """
    key, forgotten = _key(digest, epoch), _forgotten(digest)
    found: dict[str, Any]
    if read_ahead is not None and {key, forgotten} <= read_ahead["asked"]:
        found = {k: read_ahead["found"][k] for k in (key, forgotten) if k in read_ahead["found"]}
    else:
        found = cache.get_many([key, forgotten])
    tombstone = found.get(forgotten)
    return principal_from(found.get(key), tombstone), tombstone


def principal_from(entry: Any, tombstone: Any) -> CachedPrincipal | None:
    """A principal cache entry as read beside its token's `tombstone` (None: none stood), or
    None when it is absent or not current."""
    if not isinstance(entry, tuple) or not tombstones.is_current(entry[0], tombstone):
        return None
    _, user_id, tenant_id, role, token_id, is_staff, expires_at, unused = entry
    principal = Principal(
        user_id=user_id, tenant_id=tenant_id, role=Role(role), token_id=token_id, is_staff=is_staff
    )
    return CachedPrincipal(principal, expires_at, unused)


def keys_to_read_ahead(request: HttpRequest) -> list[str]:
    """The principal cache's keys for the request's bearer token, for tenant resolution to read
    in its round trip (settings.TENANT_RESOLUTION_READS_ALSO); [] without a bearer token."""
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return []
    digest = token_digest(parts[1])
    return [_key(digest, current_epoch()), _forgotten(digest)]


def remember_principal(
    digest: str, entry: CachedPrincipal, now: datetime, epoch: int, seen: Any = _UNREAD
) -> None:
    """Cache `entry` until ENTRY_TTL or the token's expiry, stamped with the tombstone `seen`
    before the database was read (read_principal); without it, only if none stands now."""
    ttl = _ttl_seconds(entry, now)
    if ttl < 1:
        return
    if seen is _UNREAD:
        # A tombstone read after the query says nothing of what the query saw: no stamp.
        if cache.get(_forgotten(digest)) is not None:
            return
        seen = None
    cacheable, stamp = tombstones.fill_stamp(seen)
    if not cacheable:
        return
    cache.set(_key(digest, epoch), _value(stamp, entry), ttl)


def _value(stamp: Any, entry: CachedPrincipal) -> tuple[Any, ...]:
    p = entry.principal
    return (
        stamp,
        p.user_id,
        p.tenant_id,
        p.role.value,
        p.token_id,
        p.is_staff,
        entry.expires_at,
        entry.unused,
    )


def _ttl_seconds(entry: CachedPrincipal, now: datetime) -> int:
    ttl = ENTRY_TTL if entry.expires_at is None else min(ENTRY_TTL, entry.expires_at - now)
    return int(ttl.total_seconds())


def prime_principal(digest: str, entry: CachedPrincipal, now: datetime, epoch: int) -> None:
    """Cache a token that was just committed (onboarding's owner token, under the epoch read in
    the statement that created it), marked unused: its first request then runs no auth query.

    Added, never overwritten, and unstamped, like tenants.resolution.remember_host: read only
    while no tombstone stands, so any forget of the token, earlier or later, wins."""
    ttl = _ttl_seconds(entry, now)
    if ttl >= 1:
        cache.add(_key(digest, epoch), _value(None, replace(entry, unused=True)), ttl)


def mark_used(digest: str, entry: CachedPrincipal, now: datetime, epoch: int) -> None:
    """Cache `entry`, read unused and now used (its last_used_at written), as used: later hits
    write nothing. Unstamped, as prime_principal wrote it: a tombstone still wins."""
    ttl = _ttl_seconds(entry, now)
    if ttl >= 1:
        cache.set(_key(digest, epoch), _value(None, replace(entry, unused=False)), ttl)


def forget_principals(digests: Iterable[str]) -> None:
    """Forget the entries of these token digests now; settled once the transaction commits."""
    tombstones.forget([_forgotten(d) for d in digests], int(ENTRY_TTL.total_seconds()))
