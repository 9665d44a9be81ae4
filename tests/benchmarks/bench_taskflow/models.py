"""The TaskFlow tables as Django models, for the onboarding benchmark's django-tenants path only.

They mirror migrations_sqla/versions/0001_taskflow_tables.py: six tables (projects, tasks,
comments and their history tables), the same 14 secondary indexes (partial indexes on live rows,
the partial unique project key, the unique external id, one index per history table), the same
check constraints; migration 0002 adds the same nine statement-level history triggers (transition
tables) and a shared trigger function in public. Django adds its own: FKs are DEFERRABLE and
carry no ON DELETE CASCADE (Django 5.2 cascades in Python), defaults come from `db_default`.
When the template has no TaskFlow tables yet, the benchmark builds them from these models
(`sqlmigrate`), so both paths create the same objects either way.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Cast, Coalesce, Now

LIVE = Q(deleted_at__isnull=True)
TASK_STATUSES = ("todo", "in_progress", "done", "cancelled")


class Row(models.Model):
    tenant_id = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    deleted_at = models.DateTimeField(null=True, blank=True)
    version = models.IntegerField(db_default=1)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self._meta.db_table} {self.pk}"


class Project(Row):
    key = models.CharField(max_length=20)
    name = models.CharField(max_length=200)
    description = models.TextField(db_default="", blank=True)

    class Meta:
        db_table = "projects"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "key"], condition=LIVE, name="projects_key_live"
            ),
        ]
        indexes = [
            models.Index(
                fields=["tenant_id", "created_at", "id"],
                condition=LIVE,
                name="projects_created_live",
            ),
        ]


class Task(Row):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    external_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    title = models.CharField(max_length=500)
    description = models.TextField(db_default="", blank=True)
    status = models.CharField(max_length=20, db_default="todo")
    priority = models.SmallIntegerField(db_default=2)
    assignee_id = models.BigIntegerField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)

    class Meta:
        db_table = "tasks"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "external_id"], name="tasks_external_id_key"
            ),
            models.CheckConstraint(
                condition=Q(status__in=TASK_STATUSES), name="tasks_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=0, priority__lte=4), name="tasks_priority_range"
            ),
        ]
        indexes = [
            models.Index(
                fields=["tenant_id", "created_at", "id"], condition=LIVE, name="tasks_created_live"
            ),
            models.Index(
                fields=["tenant_id", "updated_at", "id"], condition=LIVE, name="tasks_updated_live"
            ),
            models.Index(
                F("tenant_id"),
                Coalesce("due_date", Cast(Value("infinity"), models.DateField())),
                F("id"),
                condition=LIVE,
                name="tasks_due_live",
            ),
            models.Index(
                fields=["tenant_id", "priority", "id"], condition=LIVE, name="tasks_priority_live"
            ),
            models.Index(
                fields=["tenant_id", "title", "id"], condition=LIVE, name="tasks_title_live"
            ),
            models.Index(
                fields=["tenant_id", "project", "id"], condition=LIVE, name="tasks_project_live"
            ),
            models.Index(
                fields=["tenant_id", "assignee_id", "id"],
                condition=LIVE,
                name="tasks_assignee_live",
            ),
        ]


class Comment(Row):
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="comments", db_index=False
    )
    author_id = models.BigIntegerField()
    body = models.TextField()

    class Meta:
        db_table = "comments"
        indexes = [
            models.Index(
                fields=["tenant_id", "task", "id"], condition=LIVE, name="comments_task_live"
            ),
        ]


class History(models.Model):
    """One row per changed row, written by the statement-level triggers of migration 0002."""

    tenant_id = models.BigIntegerField()
    row_id = models.BigIntegerField()
    operation = models.CharField(max_length=12)
    version = models.IntegerField(null=True)
    changes = models.JSONField()
    actor_id = models.BigIntegerField(null=True)
    request_id = models.CharField(max_length=64, null=True)  # noqa: DJ001
    at = models.DateTimeField(db_default=Now())

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self._meta.db_table} {self.pk}"


class ProjectHistory(History):
    class Meta:
        db_table = "projects_history"
        indexes = [
            models.Index(fields=["tenant_id", "row_id", "id"], name="projects_history_row"),
        ]


class TaskHistory(History):
    class Meta:
        db_table = "tasks_history"
        indexes = [models.Index(fields=["tenant_id", "row_id", "id"], name="tasks_history_row")]


class CommentHistory(History):
    class Meta:
        db_table = "comments_history"
        indexes = [
            models.Index(fields=["tenant_id", "row_id", "id"], name="comments_history_row"),
        ]
