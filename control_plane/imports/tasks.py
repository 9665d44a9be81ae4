"""Celery tasks of bulk imports (queue `imports`, routed by name in control_plane.celery)."""

from __future__ import annotations

import os

from celery import Task, shared_task

from control_plane.imports import retention
from control_plane.imports.running import ImportInterrupted, run_import_job
from control_plane.imports.services import JOBS
from control_plane.worker import recovery


@shared_task(name="control_plane.imports.tasks.run_import", bind=True, max_retries=None)
def run_import(self: Task, job_id: int) -> dict[str, object]:
    """Run one import job. acks_late + reject_on_worker_lost (the app's defaults): a killed
    worker's job is delivered again and starts over; the job's attempts bound the retries.
    Under the job's lease (control_plane.worker.recovery): a delivery while a live worker runs
    the job does nothing, and a dead worker's job is sent again by beat within seconds."""
    with recovery.running(JOBS, job_id) as mine:
        if not mine:
            return {"job": job_id, "status": "held elsewhere"}
        try:
            job = run_import_job(job_id, worker=f"{self.request.hostname}:{os.getpid()}")
        except ImportInterrupted as exc:
            recovery.expect_message(JOBS, job_id, within=exc.countdown)
            raise self.retry(countdown=exc.countdown) from exc
    return {"job": job.pk, "status": job.status, "rows": job.rows_read}


@shared_task(name="control_plane.imports.tasks.remove_old_files")
def remove_old_files(retention_days: int | None = None) -> int:
    """Beat, daily: delete uploads and error reports of jobs finished past the retention."""
    return retention.remove_old_files(older_than=retention.retention_cutoff(retention_days))
