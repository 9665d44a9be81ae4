"""The fan-out in the operators' admin: the run page of a migration run.

The run page (a MigrationRun's change page) shows a progress bar, counts by status and the
per-schema table with filters and errors; run_page.js keeps it current by polling the JSON
state endpoint, the same shape the operator API returns. Every change goes through
control_plane.fanout.runs. Runs start from the tenant list's "migrate" actions, which TenantAdmin
(control_plane.tenancy.admin) declares with its others.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus
from tenants.problems import Problem

POLL_INTERVAL_MS = 1000


@admin.register(MigrationRun)
class MigrationRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "stage", "target_label", "progress", "started_by", "created_at")
    list_filter = ("status",)
    list_select_related = ("created_by",)
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Runs start from the tenant list's actions, the operator API or the CLI."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: MigrationRun | None = None) -> bool:
        return False

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

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<path:object_id>/state/",
                self.admin_site.admin_view(self.state_view),
                name="fanout_migrationrun_state",
            ),
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(require_POST(self.resume_view)),
                name="fanout_migrationrun_resume",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name="fanout_migrationrun_cancel",
            ),
        ]
        return [*own, *super().get_urls()]

    def _run(self, request: HttpRequest, object_id: str, *, change: bool = False) -> MigrationRun:
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404("No such migration run.")
        allowed = (
            self.has_change_permission(request, run)
            if change
            else self.has_view_permission(request, run)
        )
        if not allowed:
            raise PermissionDenied
        return run

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run page, rendered once with the current state, then polled by run_page.js."""
        run = self._run(request, object_id)
        state = runs.run_state(run)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Migration run {run.pk}",
            "run": run,
            "state": state,
            "statuses": StepStatus.choices,
            "count_labels": [(s, label, state["counts"][s]) for s, label in StepStatus.choices],
            "percent": round(state["progress"] * 100, 1),
            "poll_ms": POLL_INTERVAL_MS,
            "can_resume": run.status in (RunStatus.FAILED, RunStatus.CANCELLED),
            "can_cancel": run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED),
            "state_url": reverse("admin:fanout_migrationrun_state", args=[run.pk]),
            "resume_url": reverse("admin:fanout_migrationrun_resume", args=[run.pk]),
            "cancel_url": reverse("admin:fanout_migrationrun_cancel", args=[run.pk]),
        }
        return TemplateResponse(request, "admin/fanout/migrationrun/run_page.html", context)

    def state_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The run's state as JSON (filters: ?status=failed&q=acme), polled by the run page."""
        run = self._run(request, object_id)
        status = request.GET.get("status", "")
        state = runs.run_state(
            run,
            status=status if status in StepStatus.values else "",
            search=request.GET.get("q", "")[:63],
        )
        return JsonResponse(state)

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self._run(request, object_id, change=True)
        page = reverse("admin:fanout_migrationrun_change", args=[run.pk])
        confirmed = request.POST.get("confirm_downgrade") == "yes"
        try:
            runs.resume_run(run, allow_downgrade=confirmed)
        except runs.DowngradeNotConfirmed as exc:
            return confirm_downgrade(
                request, self.admin_site, detail=exc.detail, back_url=page,
                action_url=reverse("admin:fanout_migrationrun_resume", args=[run.pk]), fields=[],
            )  # fmt: skip
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, f"Run {run.pk} resumed.", messages.SUCCESS)
        return HttpResponseRedirect(page)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self._run(request, object_id, change=True)
        self._apply(
            request,
            lambda: runs.cancel_run(run),
            f"Run {run.pk} cancelled: tenants in flight finish, no new ones start.",
        )
        return HttpResponseRedirect(reverse("admin:fanout_migrationrun_change", args=[run.pk]))

    def _apply(self, request: HttpRequest, change: Any, done: str) -> None:
        try:
            change()
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)


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
