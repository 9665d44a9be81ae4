"""Operators' view of import jobs across all tenants: read-only (jobs change only by running).

Figures carry thousands separators, a finished job says what happened in words ("N rows
skipped", not the error text of a job that succeeded), the error report downloads from the job's
page, and a page showing a queued or running job reloads itself until it ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from control_plane.http.live_refresh import live_marker
from control_plane.imports.models import ImportJob, ImportStatus


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def outcome_of(job: ImportJob) -> str:
    """What happened, in words: a succeeded job with skipped rows is not an error."""
    if job.status == ImportStatus.SUCCEEDED:
        if not job.rejected:
            return "all rows written"
        rows = "row" if job.rejected == 1 else "rows"
        return f"{job.rejected:,} {rows} skipped (see the error report)"
    if job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
        return job.phase or job.status
    return job.error or job.status


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    # `number` is the job's id in the tenant's API (what a tenant quotes); `id` is the global key.
    list_display = (
        "id", "tenant", "number", "status_badge", "rows", "inserted_display",
        "updated_display", "rejected_display", "progress_percent", "duration_display", "created_at",
    )  # fmt: skip
    list_filter = ("status", "mode")
    search_fields = ("tenant__slug", "file_name", "idempotency_key")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "tenant", "status_badge", "outcome", "mode", "file_name", "size", "rows",
        "inserted_display", "updated_display", "unchanged_display", "rejected_display",
        "progress_percent", "rate", "error_report", "attempts", "worker", "created_by",
        "created_at", "started_at", "finished_at", "duration_display", "idempotency_key",
    )  # fmt: skip
    readonly_fields = fields

    class Media:
        css = {"all": ("control_plane/tenant_status.css",)}
        js = ("control_plane/live_refresh.js",)

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: ImportJob) -> SafeString:
        return format_html(
            '<span class="import-status import-status--{}">{}</span>{}',
            job.status,
            job.status,
            live_marker(not job.is_finished),
        )

    @admin.display(description="rows", ordering="rows_read")
    def rows(self, job: ImportJob) -> str:
        return count(job.rows_read)

    @admin.display(description="inserted", ordering="inserted")
    def inserted_display(self, job: ImportJob) -> str:
        return count(job.inserted)

    @admin.display(description="updated", ordering="updated")
    def updated_display(self, job: ImportJob) -> str:
        return count(job.updated)

    @admin.display(description="unchanged", ordering="unchanged")
    def unchanged_display(self, job: ImportJob) -> str:
        return count(job.unchanged)

    @admin.display(description="rejected", ordering="rejected")
    def rejected_display(self, job: ImportJob) -> str:
        return count(job.rejected)

    @admin.display(description="progress")
    def progress_percent(self, job: ImportJob) -> str:
        """A failed or cancelled job has no progress to speak of: its outcome says what happened."""
        if job.status in (ImportStatus.FAILED, ImportStatus.CANCELLED):
            return "-"
        return f"{job.progress:.0f}%"

    @admin.display(description="rate")
    def rate(self, job: ImportJob) -> str:
        if job.status == ImportStatus.FAILED or not job.rows_per_second:
            return "-"
        return f"{job.rows_per_second:,.0f} rows/s"

    @admin.display(description="size")
    def size(self, job: ImportJob) -> str:
        return f"{job.file_size:,} bytes"

    @admin.display(description="outcome")
    def outcome(self, job: ImportJob) -> str:
        return outcome_of(job)

    @admin.display(description="duration")
    def duration_display(self, job: ImportJob) -> str:
        duration = job.duration
        return "-" if duration is None else f"{duration.total_seconds():,.1f}s"

    @admin.display(description="error report")
    def error_report(self, job: ImportJob) -> SafeString | str:
        if job.files_removed_at is not None:
            return f"deleted {job.files_removed_at:%Y-%m-%d}, past the retention"
        if not job.rejected or not job.errors_path:
            return "-"
        return format_html(
            '<a href="{}" id="import-error-report" download>Download the error report</a>'
            " ({} {}, each with its fault and its values as the file had them)",
            reverse("admin:imports_importjob_errors", args=[job.pk]),
            f"{job.rejected:,}",
            "row" if job.rejected == 1 else "rows",
        )

    def get_urls(self) -> list[URLPattern]:
        errors = path(
            "<path:object_id>/errors/",
            self.admin_site.admin_view(self.errors_view),
            name="imports_importjob_errors",
        )
        return [errors, *super().get_urls()]

    def errors_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """The job's error report as a download (the file stays where the worker wrote it)."""
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("No such import job.")
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        report = Path(job.errors_path) if job.errors_path else None
        if report is None or job.files_removed_at is not None or not report.exists():
            self.message_user(request, f"Import {job.pk} has no error report.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:imports_importjob_change", args=[job.pk]))
        return FileResponse(
            report.open("rb"),
            as_attachment=True,
            filename=f"import-{job.pk}-{job.tenant.slug}-errors.csv",
            content_type="text/csv",
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Titled with the job and its tenant's slug."""
        job = self.get_object(request, unquote(object_id))
        title = f"Import {job.pk} into {job.tenant.slug}" if job is not None else None
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "title": title}
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
