"""Queues that no worker consumes, cheaply enough for /readyz and the admin index.

Asking the workers is a broadcast that waits its whole timeout, so it never runs on a probe's
request: the answer is kept in Redis for QUEUE_CONSUMERS_CACHE_SECONDS (one broadcast per
period for all web processes) and in the process; when both are stale a background thread asks
again and the caller gets the last answer it had (or "unknown" the first time).

/readyz answers anyone, so it says how many queues have no worker, never which workers exist;
a queue with no worker does not make the web process unready (it can still serve), it is a
warning for the operator. The admin, behind a login, names the queues.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache

from control_plane.worker.queues import consumers_by_queue

CACHE_KEY = "worker:queue-consumers"
BROADCAST_TIMEOUT = 1.0

_lock = threading.Lock()
_last: tuple[float, dict[str, list[str]]] | None = None
_refreshing = False


def _refresh() -> None:
    global _last, _refreshing
    try:
        answer = consumers_by_queue(BROADCAST_TIMEOUT)
        cache.set(CACHE_KEY, answer, settings.QUEUE_CONSUMERS_CACHE_SECONDS)
        with _lock:
            _last = (time.monotonic(), answer)
    finally:
        with _lock:
            _refreshing = False


def queue_consumers_cached(*, wait: bool = False) -> dict[str, list[str]] | None:
    """Consumers by queue as last seen (None: not known yet); `wait` asks now if nothing is known."""
    global _last, _refreshing
    ttl = settings.QUEUE_CONSUMERS_CACHE_SECONDS
    with _lock:
        last = _last
    if last is not None and time.monotonic() - last[0] < ttl:
        return last[1]
    shared = cache.get(CACHE_KEY)
    if isinstance(shared, dict):
        with _lock:
            _last = (time.monotonic(), shared)
        return shared
    if wait and last is None:
        _refresh()
        return _last[1] if _last is not None else None
    with _lock:
        start = not _refreshing
        _refreshing = True
    if start:
        threading.Thread(target=_refresh, name="queue-consumers", daemon=True).start()
    return last[1] if last is not None else None


def unconsumed_queues(*, wait: bool = False) -> list[str] | None:
    """The platform's queues no worker consumes (None: not known yet)."""
    consumers = queue_consumers_cached(wait=wait)
    if consumers is None:
        return None
    return [queue for queue, workers in consumers.items() if not workers]


def readiness_warnings() -> list[dict[str, Any]]:
    """/readyz's warnings (settings READINESS_WARNINGS): counts only, no names."""
    unconsumed = unconsumed_queues()
    if unconsumed is None:
        return [{"name": "queues", "ok": None, "detail": "unknown (being checked)"}]
    if not unconsumed:
        return [{"name": "queues", "ok": True, "detail": "every queue has a worker"}]
    return [
        {
            "name": "queues",
            "ok": False,
            "detail": f"{len(unconsumed)} queue(s) without a worker",
        }
    ]


def forget() -> None:
    """Drop this process's and Redis's answer (tests; after starting or stopping workers)."""
    global _last
    with _lock:
        _last = None
    cache.delete(CACHE_KEY)
