"""The cache epoch: the version stamp in PostgreSQL that every cached tenant or principal must match.

Triggers (tenants migration 0004, control_plane migration 0002) move the one-row epoch in the
same transaction as any change that decides how a host resolves or a token authenticates: ORM
saves, QuerySet.update() and plain SQL alike. The caches key their entries by the epoch, so a
change made any way, or made while Redis was unreachable and no tombstone could be written,
leaves every older entry unread once a process has seen the new epoch.

A process reads the epoch at most every CACHE_EPOCH_CHECK_SECONDS (a query of its own, not one
per request), and at once after its cache comes back from an outage. Saves still forget their
entries at once (tombstones); the check bounds how long a change made behind the ORM's back can
be served stale. This module must never be a query per request unless that setting is 0.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection

# Whether the row may be this transaction's own uncommitted bump (a reading then used, never
# kept). A savepoint's xid is assigned after its transaction's, so any xmin at or past ours may be
# ours; a concurrent transaction's commit past it is only read again next time.
_READ = (
    "SELECT value, COALESCE(xmin::text::bigint"
    " >= pg_current_xact_id_if_assigned()::text::bigint % 4294967296, false)"
    " FROM public.cache_epoch WHERE id = 1"
)


class _View:
    """This process's last reading of the epoch: the value, when, and after which cache recovery."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0
        self.read_at = float("-inf")
        self.recoveries = -1


_view = _View()


def current_epoch() -> int:
    """The epoch as this process last read it, read again when older than the check interval."""
    recoveries = getattr(cache, "recoveries", 0)
    now = time.monotonic()
    if now - _view.read_at < settings.CACHE_EPOCH_CHECK_SECONDS and recoveries == _view.recoveries:
        return _view.value
    # Read before the caller reads the rows it caches: an entry is then never newer than its key.
    with connection.cursor() as cursor:
        cursor.execute(_READ)
        value, own = cursor.fetchone()
    if own:  # it may yet roll back: other requests of this process keep the committed view
        return int(value)
    with _view.lock:
        _view.value, _view.read_at, _view.recoveries = int(value), now, recoveries
    return _view.value


def forget_view() -> None:
    """Read the epoch again at the next use (tests, and code that just moved it)."""
    _view.read_at = float("-inf")
