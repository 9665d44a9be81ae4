"""Migration runs (public schema): what a fan-out targets, how it rolls out, and each schema's step.

Counts are never stored: they are one GROUP BY over a run's TenantMigration rows
(`control_plane.fanout.runs.run_counts`), so they cannot drift from the rows they count.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from tenants.models import Tenant

# The largest count a PositiveIntegerField holds in PostgreSQL (an integer column).
COUNT_MAX = 2**31 - 1


# A backfill's lanes of the shared schema (tenant null, named `shared/<n>`) are dispatched,
# counted and budgeted like tenants; the template and shared steps themselves are not.
LANE_STEPS = Q(tenant__isnull=True, schema_name__contains="/")
WORK_STEPS = Q(tenant__isnull=False) | LANE_STEPS


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class Stage(models.TextChoices):
    """Where a run is: the platform schemas first, then canaries, the rest, a final sweep."""

    SCHEMAS = "schemas", "Template and shared schemas"
    CANARY = "canary", "Canary tenants"
    ROLLOUT = "rollout", "Rollout"
    SWEEP = "sweep", "Final sweep"
    DONE = "done", "Done"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Operation(models.TextChoices):
    """What a run does to each schema: migrate it to a revision, or fill a revision's BACKFILL."""

    MIGRATE = "migrate", "Migrate"
    BACKFILL = "backfill", "Backfill"


class MigrationRun(models.Model):
    """One fan-out of the TaskFlow (Alembic) and Django tenant-app migrations to tenant schemas."""

    created_by: models.ForeignKey[Any, Any] = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who started it when no signed-in operator did: the CLI's "cli: user@host".
    started_from: models.CharField[str, str] = models.CharField(
        max_length=200, blank=True, default=""
    )
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)
    started_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    finished_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    status: models.CharField[str, str] = models.CharField(
        max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True
    )
    stage: models.CharField[str, str] = models.CharField(
        max_length=12, choices=Stage.choices, default=Stage.SCHEMAS
    )
    # Targets. `requested_revision` is what the operator asked for ("head" or a revision id);
    # `target` is what it resolved to once the template was migrated: {"django", "alembic"}.
    requested_revision: models.CharField[str, str] = models.CharField(max_length=64, default="head")
    target: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(
        default=dict, blank=True
    )
    # Another Alembic script directory than migrations_sqla (tests, benchmarks); blank = default.
    script_location: models.CharField[str, str] = models.CharField(
        max_length=500, blank=True, default=""
    )
    # Strategy.
    tenant_slugs: models.JSONField[list[str] | None, list[str] | None] = models.JSONField(
        null=True, blank=True, help_text="Selected tenants; empty means every schema-mode tenant."
    )
    canary_count: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=1)
    concurrency: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=2)
    batch_size: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=50)
    max_failures: models.PositiveIntegerField[int | None, int | None] = models.PositiveIntegerField(
        null=True, blank=True
    )
    max_failure_percent: models.FloatField[float | None, float | None] = models.FloatField(
        null=True, blank=True
    )
    lock_timeout: models.CharField[str, str] = models.CharField(max_length=20, default="5s")
    statement_timeout: models.CharField[str, str] = models.CharField(max_length=20, default="5min")
    verify: models.BooleanField[bool, bool] = models.BooleanField(
        default=False, help_text="Read every schema's version tables instead of trusting records."
    )
    batches_dispatched: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(
        default=0
    )
    # What each schema gets (migrations_sqla.migrator or migrations_sqla.backfill) and its
    # options: a backfill's {"revision", "batch_rows", "throttle_ms"}.
    operation: models.CharField[str, str] = models.CharField(
        max_length=12, choices=Operation.choices, default=Operation.MIGRATE
    )
    options: models.JSONField[dict[str, Any], dict[str, Any]] = models.JSONField(
        default=dict, blank=True
    )
    error: models.TextField[str, str] = models.TextField(blank=True, default="")
    # When the reaper last re-sent the run's messages (control_plane.fanout.reaper).
    nudged_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    def failure_budget(self, total: int) -> int:
        """How many tenants may fail before the run stops dispatching."""
        if self.max_failure_percent is not None:
            return int(total * self.max_failure_percent / 100)
        return self.max_failures or 0

    def budget_label(self) -> str:
        if self.max_failure_percent is not None:
            return f"{self.max_failure_percent:g}%"
        return str(self.max_failures or 0)


class TenantMigration(models.Model):
    """One schema's migration in a run: a tenant's, or (tenant null) the template's or shared's."""

    run: models.ForeignKey[MigrationRun, MigrationRun] = models.ForeignKey(
        MigrationRun, on_delete=models.CASCADE, related_name="steps"
    )
    tenant: models.ForeignKey[Tenant | None, Tenant | None] = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    schema_name: models.CharField[str, str] = models.CharField(max_length=63)
    canary: models.BooleanField[bool, bool] = models.BooleanField(default=False)
    batch: models.PositiveIntegerField[int | None, int | None] = models.PositiveIntegerField(
        null=True, blank=True
    )
    status: models.CharField[str, str] = models.CharField(
        max_length=12, choices=StepStatus.choices, default=StepStatus.PENDING
    )
    attempts: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=0)
    started_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    finished_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    duration_ms: models.FloatField[float | None, float | None] = models.FloatField(
        null=True, blank=True
    )
    revisions_before: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(
        default=dict, blank=True
    )
    revisions_after: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(
        default=dict, blank=True
    )
    error: models.TextField[str, str] = models.TextField(blank=True, default="")
    # A backfill's progress in this schema: {"rows", "cursor": [tenant_id, last_id], "done"}.
    progress: models.JSONField[dict[str, Any], dict[str, Any]] = models.JSONField(
        default=dict, blank=True
    )

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["run", "schema_name"], name="fanout_step_once_per_run"),
        ]
        indexes = [
            models.Index(fields=["run", "status"], name="fanout_step_run_status"),
            models.Index(fields=["run", "batch"], name="fanout_step_run_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.schema_name} in run {self.run_id} ({self.status})"
