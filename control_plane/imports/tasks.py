"""Celery tasks of bulk imports (queue `imports`, routed by name in control_plane.celery)."""

from __future__ import annotations

import os
from collections.abc import Collection

from celery import Task, shared_task
from django.conf import settings

from control_plane.imports import retention
from control_plane.imports.models import ACTIVE_STATUSES, ImportJob
from control_plane.imports.running import ImportInterrupted, run_import_job
from control_plane.imports.services import JOBS
from control_plane.worker import fairness, recovery

QUEUE = "imports"


@shared_task(name="control_plane.imports.tasks.run_import", bind=True, max_retries=None)
def run_import(self: Task, job_id: int) -> dict[str, object]:
    """Run one import job. acks_late + reject_on_worker_lost (the app's defaults): a killed
    worker's job is delivered again and starts over; the job's attempts bound the retries.

    Under the job's lease (control_plane.worker.recovery): a delivery while a live worker runs
    the job does nothing, and a dead worker's job is sent again by beat within seconds. At most
    IMPORTS_PER_TENANT jobs of one tenant run at once (control_plane.worker.fairness): a job
    whose tenant has its slots taken is queued again and the process serves someone else: first
    by a read-only look at the slots (no lease, no slot), else under the lease, which comes
    before the slot, so a duplicate delivery never touches the slot its running twin holds.
    """
    found = ImportJob.objects.filter(pk=job_id).values_list("tenant_id", "status").first()
    tenant_id, status = found if found is not None else (None, None)
    cap = settings.IMPORTS_PER_TENANT if tenant_id is not None else 0
    if status in ACTIVE_STATUSES and fairness.must_wait(QUEUE, tenant_id, str(job_id), cap):
        # The cheap bounce: the tenant's slots are others', nothing taken, nothing held.
        recovery.expect_message(JOBS, job_id, within=fairness.send_again(self))
        return {"job": job_id, "status": "waiting for the tenant's slot"}
    with recovery.running(JOBS, job_id) as mine:
        if not mine:
            if ImportJob.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).exists():
                recovery.look_again_later(self, JOBS, job_id)
            return {"job": job_id, "status": "held elsewhere"}
        with fairness.slot(QUEUE, tenant_id, str(job_id), cap, _active_jobs) as taken:
            if not taken:
                recovery.expect_message(JOBS, job_id, within=fairness.send_again(self))
                return {"job": job_id, "status": "waiting for the tenant's slot"}
            try:
                job = run_import_job(job_id, worker=f"{self.request.hostname}:{os.getpid()}")
            except ImportInterrupted as exc:
                recovery.expect_message(JOBS, job_id, within=exc.countdown)
                raise self.retry(countdown=exc.countdown) from exc
    return {"job": job.pk, "status": job.status, "rows": job.rows_read}


def _active_jobs(members: Collection[str]) -> list[str]:
    """The slot holders whose job is still queued or running."""
    ids = [int(m) for m in members if m.isdigit()]
    active = ImportJob.objects.filter(pk__in=ids, status__in=ACTIVE_STATUSES)
    return [str(pk) for pk in active.values_list("pk", flat=True)]


@shared_task(name="control_plane.imports.tasks.remove_old_files")
def remove_old_files(retention_days: int | None = None) -> int:
    """Beat, daily: delete uploads and error reports of jobs finished past the retention."""
    return retention.remove_old_files(older_than=retention.retention_cutoff(retention_days))
