"""ImportJob: one bulk import of tasks into one tenant, recorded in the public schema."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models

from tenants.models import Tenant


class ImportMode(models.TextChoices):
    ALL_OR_NOTHING = "all_or_nothing", "All or nothing"
    SKIP_INVALID = "skip_invalid", "Skip invalid rows"


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (ImportStatus.QUEUED, ImportStatus.RUNNING)


class ImportJob(models.Model):
    """An uploaded CSV file and what importing it did.

    The worker's final status, counts and the tenant's rows commit in one transaction, so a job
    marked succeeded always has its rows, and a job that is not never has any.
    """

    tenant: models.ForeignKey[Tenant, Tenant] = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="import_jobs"
    )
    # The job's id in the tenant's API (`/api/v1/imports/<number>`): numbered per tenant, so it
    # says nothing of other tenants' imports. The primary key stays the control plane's own
    # (admin, worker messages, CLI). Jobs recorded before numbering kept their key as number.
    number = models.BigIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # NULL, not "", when absent: the unique constraint must not tie keyless jobs together.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    mode = models.CharField(
        max_length=20, choices=ImportMode.choices, default=ImportMode.ALL_OR_NOTHING
    )
    status = models.CharField(
        max_length=10, choices=ImportStatus.choices, default=ImportStatus.QUEUED, db_index=True
    )
    phase = models.CharField(max_length=20, blank=True, default="")
    file_name = models.CharField(max_length=255, blank=True, default="")
    file_path = models.CharField(max_length=1000)
    file_size = models.BigIntegerField(default=0)
    file_sha256 = models.CharField(max_length=64)
    columns = models.JSONField(default=list, blank=True)
    errors_path = models.CharField(max_length=1000, blank=True, default="")
    rows_read = models.BigIntegerField(default=0)
    inserted = models.BigIntegerField(default=0)
    updated = models.BigIntegerField(default=0)
    unchanged = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    rows_per_second = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    # The uploading request's id: the worker binds it as app.request_id, so history rows written
    # by the import name the request that asked for it.
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when beat deleted the upload and the error report, past the file retention.
    files_removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="import_job_idempotency_key"
            ),
            models.UniqueConstraint(fields=["tenant", "number"], name="import_job_tenant_number"),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="import_job_tenant_recent")]

    def __str__(self) -> str:
        return f"import {self.pk} of {self.tenant_id} ({self.status})"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def is_finished(self) -> bool:
        return self.status not in ACTIVE_STATUSES
