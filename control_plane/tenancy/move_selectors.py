"""Reading recorded moves for operators: the list, one move, and its state with its progress.

The operator API shows these shapes (control_plane.tenancy.move_api); the moves themselves are
requested, run and retried by control_plane.tenancy.moves. A move copies in one transaction, so
its row counts are known once it is done; while it runs, its progress is how long it has been
copying, whether a live worker holds it, and, while it waits, whether any worker consumes its
queue. Nothing here changes a move.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from control_plane.tenancy.models import MoveStatus, TenantMove
from control_plane.tenancy.moves import MOVE_QUEUE, MOVES
from control_plane.worker import recovery
from control_plane.worker.readiness import unconsumed_queues
from tenants.problems import NotFound

MOVE_LIST_LIMIT = 50


def move_list(
    *, status: str = "", tenant: str = "", limit: int = MOVE_LIST_LIMIT
) -> list[TenantMove]:
    """Recent moves, newest first; only those in `status` or of the tenant `tenant` (a slug)."""
    moves: QuerySet[TenantMove] = TenantMove.objects.select_related("tenant", "requested_by")
    if status:
        moves = moves.filter(status=status)
    if tenant:
        moves = moves.filter(tenant__slug=tenant)
    return list(moves[:limit])


def move_of(move_id: int) -> TenantMove:
    """One move by id, or NotFound."""
    move = TenantMove.objects.select_related("tenant", "requested_by").filter(pk=move_id).first()
    if move is None:
        raise NotFound(f"No move {move_id}.")
    return move


def move_url(move: TenantMove) -> str:
    return f"/ops/v1/moves/{move.pk}"


def _elapsed_seconds(move: TenantMove) -> float:
    """Waiting (queued), copying (since its worker claimed it), or start to end (finished)."""
    since = move.requested_at if move.status == MoveStatus.QUEUED else move.started_at
    since = since or move.requested_at  # refused at once: never started
    until = move.finished_at or timezone.now()
    return round(max((until - since).total_seconds(), 0.0), 3)


def _stuck(move: TenantMove) -> bool | None:
    """Unfinished with neither a message waiting nor a live worker (None: the broker did not answer)."""
    if move.is_finished:
        return False
    try:
        return recovery.is_stuck(MOVES, move.pk)
    except Exception:  # the broker's Redis is down: not knowing is an answer here
        return None


def _queue_consumed(move: TenantMove) -> bool | None:
    """For a queued move: whether any worker consumes its queue (None: not known, or not queued)."""
    if move.status != MoveStatus.QUEUED:
        return None
    unconsumed = unconsumed_queues(wait=True)
    return None if unconsumed is None else MOVE_QUEUE not in unconsumed


def move_state(move: TenantMove) -> dict[str, Any]:
    """A move as the operator API shows it: what was asked, where it stands, and its outcome."""
    rows = dict(move.rows or {})
    return {
        "id": move.pk,
        "tenant": move.tenant.slug,
        "source": move.source,
        "target": move.target,
        "status": move.status,
        "finished": move.is_finished,
        "error": move.error,
        "rows": rows,
        "rows_total": sum(rows.values()) if rows else None,
        "seconds": move.seconds,
        "attempts": move.attempts,
        "worker": move.worker,
        "requested_by": str(move.requested_by) if move.requested_by else None,
        "requested_via": move.requested_via,
        "requested_at": move.requested_at,
        "started_at": move.started_at,
        "finished_at": move.finished_at,
        "progress": {
            "elapsed_seconds": _elapsed_seconds(move),
            "stuck": _stuck(move),
            "queue_consumed": _queue_consumed(move),
        },
        "url": move_url(move),
    }
