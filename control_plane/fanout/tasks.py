"""Celery tasks of the fan-out (queue `migrations`): thin, they load by id and call a service.

Global acks_late + reject_on_worker_lost: a batch whose worker dies is delivered again, and the
batch's idempotence (per-schema lock, revisions read under it) makes the redelivery safe.
"""

from __future__ import annotations

from celery import shared_task

from control_plane.fanout import batches, orchestrator, reaper


@shared_task(name="control_plane.fanout.advance_run")
def advance_run(run_id: int) -> None:
    """Move the run on: platform schemas, dispatch of batches, sweep, final status."""
    orchestrator.advance(run_id)


@shared_task(name="control_plane.fanout.migrate_batch")
def migrate_batch(run_id: int, batch: int, force: bool = False) -> int:
    """Migrate one batch of the run's tenants over one owner connection."""
    return batches.run_batch(run_id, batch, force=force)


@shared_task(name="control_plane.fanout.reap_stuck_runs")
def reap_stuck_runs() -> list[int]:
    """Beat, every minute: re-send the messages of runs that stopped moving."""
    return reaper.reap_stuck_runs()
