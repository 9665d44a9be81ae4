"""Which workers consume a Celery queue right now.

One answer for every caller that must tell an operator "nobody is working on this": the CLI's
`--wait` loops, `/readyz` and the admin. It asks the workers over the broker, so it costs up to
`timeout` seconds; callers that run often use control_plane.worker.readiness, which caches it.
"""

from __future__ import annotations

from control_plane.celery import QUEUES
from control_plane.celery import app as celery_app


def consumers_by_queue(timeout: float = 1.0) -> dict[str, list[str]]:
    """For each of the platform's queues, the workers consuming it (one broadcast for all)."""
    try:
        replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker itself is away: nobody can be seen consuming
        replies = {}
    return {
        queue: sorted(
            name for name, queues in replies.items() if any(q["name"] == queue for q in queues)
        )
        for queue in QUEUES
    }


def queue_consumers(queue: str, timeout: float = 1.0) -> list[str]:
    """Workers that consume `queue` right now (they answer within `timeout`)."""
    try:
        replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker itself is away: nobody can be seen consuming
        return []
    return sorted(
        name for name, queues in replies.items() if any(q["name"] == queue for q in queues)
    )


CONSUMERS_CACHE_SECONDS = 10


def queue_consumers_cached(queue: str) -> list[str]:
    """queue_consumers, remembered for a few seconds: for pages that poll (the admin's status
    panels), so a page refreshed every second does not ask every worker every second."""
    from django.core.cache import cache

    key = f"queue-consumers:{queue}"
    found = cache.get(key)
    if found is None:
        found = queue_consumers(queue)
        cache.set(key, found, CONSUMERS_CACHE_SECONDS)
    return list(found)
