"""The fan-out in the operators' admin: the run page of a migration run.

The run page (a MigrationRun's change page) shows a progress bar, counts by status and the
per-schema table with filters and errors; run_page.js keeps it current by polling the JSON
state endpoint, the same shape the operator API returns (control_plane.http.live_admin, shared
with the evolution page). Every change goes through
control_plane.fanout.runs. Runs start from the tenant list's "migrate" actions, which TenantAdmin
(control_plane.tenancy.admin) declares with its others.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus
from control_plane.http.live_admin import LivePageAdmin
from tenants.problems import Problem


@admin.register(MigrationRun)
class MigrationRunAdmin(LivePageAdmin):
    list_display = ("id", "status", "stage", "target_label", "progress", "started_by", "created_at")
    list_filter = ("status",)
    list_select_related = ("created_by",)
    ordering = ("-created_at",)
    page_template = "admin/fanout/migrationrun/run_page.html"
    posted = ("resume", "cancel")

    @admin.display(description="Started by")
    def started_by(self, run: MigrationRun) -> str:
        return runs.started_by(run) or "-"

    @admin.display(description="Target")
    def target_label(self, run: MigrationRun) -> str:
        return run.target.get("alembic", run.requested_revision) or run.requested_revision

    @admin.display(description="Progress")
    def progress(self, run: MigrationRun) -> SafeString:
        counts = runs.run_counts(run)
        return format_html("{}/{} ({} failed)", counts["done"], counts["total"], counts["failed"])

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run page, rendered once with the current state, then polled by run_page.js."""
        run = self.checked_object(request, object_id)
        state = runs.run_state(run)
        return self.live_page(
            request,
            run,
            title=f"Migration run {run.pk}",
            state=state,
            run=run,
            statuses=StepStatus.choices,
            count_labels=[(s, label, state["counts"][s]) for s, label in StepStatus.choices],
            percent=round(state["progress"] * 100, 1),
            can_resume=run.status in (RunStatus.FAILED, RunStatus.CANCELLED),
            can_cancel=run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED),
            resume_url=self.url_of("resume", run),
            cancel_url=self.url_of("cancel", run),
        )

    def object_state(self, request: HttpRequest, run: MigrationRun) -> dict[str, Any]:
        """The run's state (filters: ?status=failed&q=acme), polled by the run page."""
        status = request.GET.get("status", "")
        return runs.run_state(
            run,
            status=status if status in StepStatus.values else "",
            search=request.GET.get("q", "")[:63],
        )

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self.checked_object(request, object_id, change=True)
        confirmed = request.POST.get("confirm_downgrade") == "yes"
        try:
            runs.resume_run(run, allow_downgrade=confirmed)
        except runs.DowngradeNotConfirmed as exc:
            return confirm_downgrade(
                request, self.admin_site, detail=exc.detail, back_url=self.url_of("change", run),
                action_url=self.url_of("resume", run), fields=[],
            )  # fmt: skip
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, f"Run {run.pk} resumed.", messages.SUCCESS)
        return self.back_to_page(run)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self.checked_object(request, object_id, change=True)
        self.apply(
            request,
            lambda: runs.cancel_run(run),
            f"Run {run.pk} cancelled: tenants in flight finish, no new ones start.",
        )
        return self.back_to_page(run)


def confirm_downgrade(
    request: HttpRequest,
    site: admin.AdminSite,
    *,
    detail: str,
    action_url: str,
    back_url: str,
    fields: list[tuple[str, str]],
) -> TemplateResponse:
    """The page that asks an operator to confirm a run to an older revision: it posts `fields`
    back to `action_url` with confirm_downgrade=yes (TenantAdmin's migrate actions use it too)."""
    context = {
        **site.each_context(request),
        "title": "Confirm the downgrade",
        "detail": detail,
        "action_url": action_url,
        "back_url": back_url,
        "fields": fields,
    }
    return TemplateResponse(request, "admin/fanout/confirm_downgrade.html", context)
