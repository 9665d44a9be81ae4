"""Beat deletes the uploads and error reports of import jobs finished past the retention."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from control_plane.imports.models import ImportJob
from control_plane.imports.tasks import remove_old_files
from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker


def failed_import(tenant: ImportTenant) -> ImportJob:
    """A job that failed on a rejected row: its upload and error report stay on disk."""
    rows = [*generated_rows(3, "P1"), ("BAD-1", "NOPE", "Bad", "", "todo", "1", "", "")]
    job = tenant.import_and_wait(csv_bytes(rows))
    assert job["status"] == "failed", job
    stored = tenant.stored(job["id"])
    assert Path(stored.file_path).exists()
    assert Path(stored.errors_path).exists()
    return stored


def test_files_of_jobs_finished_past_the_retention_are_deleted_by_a_worker(
    schema_tenant: ImportTenant, worker: object
) -> None:
    old, recent = failed_import(schema_tenant), failed_import(schema_tenant)
    ImportJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=8))

    removed = remove_old_files.delay(7).get(timeout=30)  # through a real worker

    assert removed >= 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert not Path(old.file_path).exists()
    assert not Path(old.errors_path).exists()
    assert old.files_removed_at is not None
    assert Path(recent.file_path).exists()
    assert Path(recent.errors_path).exists()
    assert recent.files_removed_at is None
    removed_at = schema_tenant.job(old.number)["files_removed_at"]
    assert datetime.fromisoformat(removed_at) == old.files_removed_at
    gone = schema_tenant.client("viewer").get(f"/api/v1/imports/{old.number}/errors")
    assert gone.status_code == 410
    assert gone["Content-Type"] == "application/problem+json"
    assert schema_tenant.errors(recent.number)[1:]  # the recent report is still served
    # Counts stay with the job; a second pass has nothing left to do for it.
    assert old.rejected == 1
    remove_old_files.delay(7).get(timeout=30)
    assert ImportJob.objects.get(pk=old.pk).files_removed_at == old.files_removed_at


def test_beat_schedules_the_removal_of_old_import_files() -> None:
    from control_plane.celery import app

    assert any(
        entry["task"] == "control_plane.imports.tasks.remove_old_files"
        for entry in app.conf.beat_schedule.values()
    )
