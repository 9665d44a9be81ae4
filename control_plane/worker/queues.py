"""Which workers consume a Celery queue right now.

One answer for every caller that must tell an operator "nobody is working on this": the CLI's
`--wait` loops, `/readyz` and the admin. It asks the workers over the broker, so it costs up to
`timeout` seconds; callers that run often use control_plane.worker.readiness, which caches it.
"""

from __future__ import annotations

from typing import Any

from control_plane.celery import QUEUES
from control_plane.celery import app as celery_app


def _active_queues(timeout: float) -> dict[str, Any]:
    try:
        return celery_app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker itself is away: nobody can be seen consuming
        return {}


def _consuming(replies: dict[str, Any], queue: str) -> list[str]:
    return sorted(
        name for name, queues in replies.items() if any(q["name"] == queue for q in queues)
    )


def consumers_by_queue(timeout: float = 1.0) -> dict[str, list[str]]:
    """For each of the platform's queues, the workers consuming it (one broadcast for all)."""
    replies = _active_queues(timeout)
    return {queue: _consuming(replies, queue) for queue in QUEUES}


def queue_consumers(queue: str, timeout: float = 1.0) -> list[str]:
    """Workers that consume `queue` right now (they answer within `timeout`)."""
    return _consuming(_active_queues(timeout), queue)
