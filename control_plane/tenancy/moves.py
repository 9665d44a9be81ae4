"""Moves as recorded jobs: a TenantMove row from the request to its outcome.

The admin action, the CLI and the worker share these services. A move is requested (recorded
queued, or failed at once with the reason when the tenant's state refuses it), claimed by exactly
one worker with a conditional update (queued -> copying), and finished done or failed with the
reason. Moves are a job kind of control_plane.worker.recovery: a move runs under its lease, so
a lost message or a dead worker's move is sent again by beat, and the next delivery takes back a
move its dead holder left copying. Running it again is safe: a move interrupted before its
switch left the tenant served from the source with nothing lost, and one that died after the
switch is found done.
"""

from __future__ import annotations

import logging
import socket

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.tenancy.models import MOVE_ACTIVE_STATUSES, MoveStatus, TenantMove
from control_plane.worker import recovery
from tenants.database_roles import owner_connection
from tenants.models import Tenant
from tenants.moving import MoveRefused, MoveReport, move_refusal, move_tenant
from tenants.problems import Problem
from tenants.row_security import node_move_live

logger = logging.getLogger(__name__)

MOVE_JOB_TASK = "control_plane.tenancy.run_move"
MOVE_QUEUE = "default"
NODE_MOVE = "node"  # source and target of a move between Citus nodes (move_tenant --to-node)


class MoveInProgress(Problem):
    status = 409
    title = "Move in progress"


class MoveConflict(Problem):
    status = 409
    title = "Move conflict"


def request_move(
    tenant: Tenant,
    to: str,
    *,
    requested_by: User | None = None,
    via: str = "admin",
    send: bool = True,
) -> TenantMove:
    """Record a move of `tenant` to `to`; queue it for a worker, or record it failed with the
    reason when the tenant's state refuses it now. One move of a tenant is active at a time.
    `send=False` leaves the queued move to the caller, which runs it itself (the CLI)."""
    refusal = move_refusal(tenant, to)
    now = timezone.now()
    try:
        with transaction.atomic():
            move = TenantMove.objects.create(
                tenant=tenant,
                source=tenant.isolation,
                target=to,
                requested_by=requested_by,
                requested_via=via,
                status=MoveStatus.FAILED if refusal else MoveStatus.QUEUED,
                error=refusal or "",
                finished_at=now if refusal else None,
            )
    except IntegrityError as exc:  # the partial unique index: an active move of this tenant
        active = TenantMove.objects.filter(tenant=tenant, status__in=MOVE_ACTIVE_STATUSES).first()
        raise MoveInProgress(
            f"Tenant {tenant.slug!r} is already being moved"
            + (f" (move {active.pk}, {active.status})." if active else ".")
        ) from exc
    if refusal is None and send:
        transaction.on_commit(lambda: send_move(move))
    return move


def _send(move_id: int) -> None:
    celery_app.send_task(MOVE_JOB_TASK, args=[move_id], queue=MOVE_QUEUE)


def _unfinished() -> list[int]:
    """Active moves a worker runs. A node move runs in the process that asked for it (the CLI),
    never from a message: one left active by a killed process is closed by the next node move
    of its tenant (close_interrupted_node_moves), not sent to a worker as if it were a move
    between isolation modes."""
    active = TenantMove.objects.filter(status__in=MOVE_ACTIVE_STATUSES).exclude(source=NODE_MOVE)
    return list(active.values_list("pk", flat=True))


# Beat sends a move again when its message is lost or its worker died.
MOVES = recovery.register("move", unfinished=_unfinished, resend=_send)


def send_move(move: TenantMove) -> None:
    """Hand the move to a worker (the message carries only its id)."""
    recovery.send(MOVES, move.pk)


def claim_move(move_id: int, *, worker: str = "") -> bool:
    """queued -> copying, conditionally: of two deliveries of one message, one runs the move."""
    return bool(
        TenantMove.objects.filter(pk=move_id, status=MoveStatus.QUEUED).update(
            status=MoveStatus.COPYING,
            started_at=timezone.now(),
            worker=worker or socket.gethostname(),
        )
    )


def run_move(move_id: int, *, worker: str = "") -> TenantMove:
    """Claim and run one recorded move; a refusal or an error is recorded on the move, not lost
    in a worker's log. Under the move's recovery lease: a delivery while a live worker (or the
    CLI) runs it leaves it alone, and a move left copying by a dead holder is taken back."""
    with recovery.running(MOVES, move_id) as mine:
        if not mine:
            return TenantMove.objects.get(pk=move_id)
        # Nobody alive holds this move, so one still copying was a dead worker's.
        TenantMove.objects.filter(pk=move_id, status=MoveStatus.COPYING).update(
            status=MoveStatus.QUEUED
        )
        return _run_claimed(move_id, worker)


def _run_claimed(move_id: int, worker: str) -> TenantMove:
    if not claim_move(move_id, worker=worker):
        return TenantMove.objects.get(pk=move_id)
    move = TenantMove.objects.select_related("tenant").get(pk=move_id)
    TenantMove.objects.filter(pk=move_id).update(attempts=move.attempts + 1)
    tenant = move.tenant
    if move.attempts and tenant.isolation == move.target:
        # A retry after a worker died past the switch: the move had happened.
        return _finish(move, MoveStatus.DONE)
    try:
        report = move_tenant(tenant, move.target)
    except MoveRefused as exc:
        return _finish(move, MoveStatus.FAILED, error=str(exc.detail))
    except Exception as exc:
        logger.exception("move %s of %s failed", move.pk, tenant.slug)
        _finish(move, MoveStatus.FAILED, error=f"{type(exc).__name__}: {exc}".strip())
        raise
    kept = (
        ""
        if report.source_removed
        else f"a write reached {report.source} after the switch; it was kept"
    )
    return _finish(move, MoveStatus.DONE, report=report, error=kept)


def _finish(
    move: TenantMove, status: str, *, error: str = "", report: MoveReport | None = None
) -> TenantMove:
    """Record the outcome, only on a move still copying (a move finished elsewhere stays so)."""
    changes: dict[str, object] = {"status": status, "error": error, "finished_at": timezone.now()}
    if report is not None:
        changes.update(rows=report.rows, seconds=report.seconds)
    TenantMove.objects.filter(pk=move.pk, status=MoveStatus.COPYING).update(**changes)
    move.refresh_from_db()
    return move


def retry_move(move: TenantMove) -> TenantMove:
    """An operator's retry of a stuck move (queued or copying, no message waiting, no live
    worker): sent again now instead of at beat's next sweep. Refused (409) for a finished move
    (request a new one) and for one a live worker runs or whose message waits; 503 when the
    broker cannot be reached."""
    if move.is_finished:
        raise MoveConflict(
            f"Move {move.pk} is {move.status}; a finished move is not retried (request a new one)."
        )
    recovery.operator_retry(
        MOVES, move.pk, refused=lambda why: MoveConflict(f"Move {move.pk} is not stuck: {why}.")
    )
    move.refresh_from_db()
    return move


def close_interrupted_node_moves(tenant: Tenant) -> int:
    """Record as failed the node moves of `tenant` still recorded active whose process is gone
    (no node move holds the schema's move lock): one killed before it could record its outcome
    would otherwise block every later move of the tenant. Returns how many were closed."""
    active = TenantMove.objects.filter(
        tenant=tenant, source=NODE_MOVE, status__in=MOVE_ACTIVE_STATUSES
    )
    if not active.exists():
        return 0
    with owner_connection(autocommit=True) as conn:
        if node_move_live(conn, tenant.schema_name):
            return 0
    return active.update(
        status=MoveStatus.FAILED,
        error="Interrupted: the process running it ended before it recorded an outcome.",
        finished_at=timezone.now(),
    )
