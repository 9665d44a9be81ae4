"""Operators' view of import jobs across all tenants: read-only (jobs change only by running)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from control_plane.imports.models import ImportJob


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    # `number` is the job's id in the tenant's API (what a tenant quotes); `id` is the global key.
    list_display = (
        "id", "tenant", "number", "status", "mode", "rows_read", "inserted", "updated", "rejected",
        "progress_percent", "duration_display", "attempts", "created_at",
    )  # fmt: skip
    list_filter = ("status", "mode")
    search_fields = ("tenant__slug", "file_name", "idempotency_key")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    @admin.display(description="progress")
    def progress_percent(self, job: ImportJob) -> str:
        return f"{job.progress:.0f}%"

    @admin.display(description="duration")
    def duration_display(self, job: ImportJob) -> str:
        duration = job.duration
        return "" if duration is None else f"{duration.total_seconds():.1f}s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
