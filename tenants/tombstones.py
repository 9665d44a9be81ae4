"""Tombstones of the tenant-resolution and principal caches, and how a forgotten entry is filled again.

Forgetting a cached key (a host's tenant, a token's principal) writes a tombstone under a name
of its own that every cache epoch shares (tenants.cache_epoch), read in the same round trip as
the entry. A tombstone is first PENDING: written at once, before the change commits. While a
pending tombstone stands, readers go to the database and cache nothing: what they read may be
the rows before the change. When the change's transaction commits (at once outside one) the
tombstone is SETTLED: overwritten with a stamp of its own. A reader that saw a settled tombstone
before it queried has read the committed change (read committed: its statement started after the
commit), so it caches what it read, stamped with that tombstone.

An entry is read only beside the tombstone it was stamped with; an unstamped entry only while no
tombstone stands. A later forget writes a new tombstone, so every entry written before it, or
written after it by a reader that started before it, is left unread however late it lands. So
the cache refills on the first request after a change instead of being bypassed for the
tombstone's whole life, and no entry older than a change is served. Changes that send no signal
(QuerySet.update(), plain SQL) write no tombstone: the cache epoch covers those.

A tombstone lives its cache's entry TTL plus WRITE_MARGIN_SECONDS: longer than any unstamped
entry written before it, or just after it by a reader that saw none. A rolled-back change leaves
its tombstone pending: that key is read from the database until the tombstone expires.
This module never reads the database, and an entry of these caches is never written but with
the stamp `fill_stamp` gives for what its reader saw.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from django.core.cache import cache
from django.db import transaction

# What earlier releases wrote for every tombstone; they take any tombstone as "forgotten".
PENDING = "forgotten"
_SETTLED = "settled:"
# How long after reading the cache a reader may still write its entry (one database read).
WRITE_MARGIN_SECONDS = 60

Stamp = str | None


def tombstone_ttl(entry_ttl: int) -> int:
    """How long a tombstone of a cache whose entries live `entry_ttl` seconds stands."""
    return entry_ttl + WRITE_MARGIN_SECONDS


def forget(keys: Sequence[str], entry_ttl: int) -> None:
    """Tombstone `keys` now, and settle them once the current transaction commits."""
    if not keys:
        return
    ttl = tombstone_ttl(entry_ttl)
    cache.set_many(dict.fromkeys(keys, PENDING), ttl)

    def settle() -> None:
        cache.set_many(dict.fromkeys(keys, _SETTLED + secrets.token_hex(8)), ttl)

    transaction.on_commit(settle)


def fill_stamp(tombstone: Any) -> tuple[bool, Stamp]:
    """Whether what a reader queries after seeing `tombstone` (None: none stood) may be cached,
    and the stamp its entry carries."""
    if tombstone is None:
        return True, None
    if isinstance(tombstone, str) and tombstone.startswith(_SETTLED):
        return True, tombstone
    return False, None


def is_current(stamp: Stamp, tombstone: Any) -> bool:
    """Whether an entry stamped `stamp` may be read beside `tombstone` (None: none stands).

    A pending tombstone matches no stamp (fill_stamp never stamps with one)."""
    return stamp == tombstone
