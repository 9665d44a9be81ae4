"""Celery tasks of the fan-out (queue `migrations`): thin, they load by id and call a service.

Global acks_late + reject_on_worker_lost: a batch whose worker dies is delivered again, and the
batch's idempotence (per-schema lock, revisions read under it) makes the redelivery safe. A
database that went away (PostgreSQL restarting, a network blip) is not a task failure: the task
is sent again with a short backoff until the database answers, instead of being acknowledged
as done with the run left waiting for the reaper.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
import sqlalchemy as sa
from celery import Task, shared_task
from django import db

from control_plane.fanout import batches, orchestrator, reaper, runs
from migrations_sqla.migrator import ConnectionLost

DATABASE_GONE = (
    ConnectionLost,
    db.OperationalError,
    db.InterfaceError,
    psycopg.OperationalError,
    sa.exc.OperationalError,
)
RETRY_CAP_S = 2.0
MAX_DATABASE_RETRIES = 300  # about ten minutes of outage; then the reapers take over


def retry_when_database_gone(task: Task, exc: Exception) -> Any:
    """Close Django's broken connections and send the task again after a jittered backoff."""
    db.connections.close_all()
    countdown = random.uniform(0.2, min(RETRY_CAP_S, 0.2 * 2**task.request.retries))  # noqa: S311
    return task.retry(exc=exc, countdown=countdown, max_retries=MAX_DATABASE_RETRIES)


@shared_task(name="control_plane.fanout.advance_run", bind=True)
def advance_run(self: Task, run_id: int, looked_again: bool = False) -> None:
    """Move the run on: platform schemas, dispatch of batches, sweep, final status; the first
    batch it hands out it migrates itself, as that batch's lane (orchestrator.advance_adopting).

    A lost database during that lane sends the lane as its own migrate_batch message, which
    retries as any batch does; the advance itself is not repeated for it. A redelivered
    advance (its worker died in the lane) finds no new work and runs that lane, once its
    lease has lapsed, as the reaper would re-send it (reaper.orphan_lane_of).
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        lane = orchestrator.advance_adopting(run_id)
        if lane is None:
            lane = reaper.orphan_lane_of(run_id, redelivered=redelivered and not looked_again)
    except DATABASE_GONE as exc:
        raise retry_when_database_gone(self, exc) from exc
    if lane is None:
        return
    try:
        batches.run_batch(run_id, lane)
    except DATABASE_GONE:
        db.connections.close_all()
        runs.enqueue_batch(run_id, lane, countdown=random.uniform(0.2, RETRY_CAP_S))  # noqa: S311


@shared_task(name="control_plane.fanout.migrate_batch", bind=True)
def migrate_batch(
    self: Task, run_id: int, batch: int, force: bool = False, looked_again: bool = False
) -> int:
    """Migrate one batch of the run's tenants over one owner connection."""
    try:
        return batches.run_batch(run_id, batch, force=force, looked_again=looked_again)
    except DATABASE_GONE as exc:
        raise retry_when_database_gone(self, exc) from exc


@shared_task(name="control_plane.fanout.reap_stuck_runs")
def reap_stuck_runs() -> list[int]:
    """Beat, every minute: re-send the messages of runs that stopped moving."""
    return reaper.reap_stuck_runs()


@shared_task(name="control_plane.fanout.reap_dead_lanes")
def reap_dead_lanes() -> list[tuple[int, int]]:
    """Beat, every few seconds: re-send batches whose worker died (their lease expired)."""
    return reaper.reap_dead_lanes()
