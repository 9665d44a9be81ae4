"""Deleting the files of finished import jobs past the retention (run daily by beat).

An upload stays on disk after a failed or cancelled job (and an error report after any job) so
the tenant can look at it; past IMPORT_FILE_RETENTION_DAYS both go. The job row stays, with its
counts, and records when its files were removed. Jobs still queued or running are never touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone

from control_plane.imports import conf
from control_plane.imports.models import ACTIVE_STATUSES, ImportJob


def remove_old_files(*, older_than: datetime) -> int:
    """Delete the upload and error report of every job finished before `older_than`; how many
    jobs had their files removed."""
    jobs = ImportJob.objects.exclude(status__in=ACTIVE_STATUSES).filter(
        finished_at__lt=older_than, files_removed_at__isnull=True
    )
    removed = 0
    for job in jobs.only("id", "file_path", "errors_path").iterator(chunk_size=500):
        for name in (job.file_path, job.errors_path):
            if name:
                Path(name).unlink(missing_ok=True)
        removed += ImportJob.objects.filter(pk=job.pk, files_removed_at__isnull=True).update(
            files_removed_at=timezone.now()
        )
    return removed


def retention_cutoff(days: int | None = None) -> datetime:
    return timezone.now() - timedelta(days=conf.file_retention_days() if days is None else days)
