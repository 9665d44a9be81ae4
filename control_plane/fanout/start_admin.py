"""The admin's form that starts a migration run: target revision and strategy, then the run page.

TenantAdmin serves it (its "migrate" actions and the tenant list's "Migrate all tenants" button
lead here, with or without a selection). The run itself is started by control_plane.fanout.runs,
the same service as the operator API and the CLI; a downgrade asks for confirmation first.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from control_plane.fanout import runs
from control_plane.fanout.admin import confirm_downgrade
from migrations_sqla import scripts
from tenants.problems import Problem

FORM_FIELDS = ("tenants", "to", "canary", "concurrency", "batch_size", "max_failures")


class StartRunForm(forms.Form):
    """What an operator chooses for a run; the service checks the values (one set of rules)."""

    tenants = forms.CharField(
        required=False,
        widget=forms.HiddenInput,
        help_text="Comma-separated slugs; empty: every tenant with a schema of its own.",
    )
    to = forms.CharField(
        label="Target revision",
        initial="head",
        max_length=100,
        help_text="An Alembic revision id, head or base.",
    )
    canary = forms.IntegerField(
        label="Canary tenants", initial=1, min_value=0, help_text="Migrated first, on their own."
    )
    concurrency = forms.IntegerField(initial=2, min_value=1, help_text="Batches in flight.")
    batch_size = forms.IntegerField(initial=50, min_value=1, help_text="Tenants per batch.")
    max_failures = forms.CharField(
        label="Failure budget",
        initial="0",
        max_length=10,
        help_text="Failed tenants tolerated before the run halts: a count (3) or a share (5%).",
    )


def start_run_view(
    request: HttpRequest, site: admin.AdminSite, *, operator: User | None, back_url: str
) -> HttpResponse:
    """GET: the form (tenants from ?tenants=). POST: start the run and open its run page."""
    data = request.POST if request.method == "POST" else None
    initial = {"tenants": request.GET.get("tenants", "")}
    form = StartRunForm(data, initial=initial)
    if data is not None and form.is_valid():
        values = form.cleaned_data
        slugs = [s.strip() for s in values["tenants"].split(",") if s.strip()] or None
        try:
            run = runs.start_run(
                tenants=slugs, to=values["to"], canary=values["canary"],
                concurrency=values["concurrency"], batch_size=values["batch_size"],
                max_failures=values["max_failures"], created_by=operator,
                allow_downgrade=request.POST.get("confirm_downgrade") == "yes",
            )  # fmt: skip
        except runs.DowngradeNotConfirmed as exc:
            fields = [(name, str(request.POST.get(name, ""))) for name in FORM_FIELDS]
            return confirm_downgrade(
                request, site, detail=exc.detail, action_url=request.get_full_path(),
                back_url=request.get_full_path(), fields=fields,
            )  # fmt: skip
        except Problem as exc:
            form.add_error(None, exc.detail)
        else:
            what = f"{len(slugs)} tenants" if slugs else "all tenants"
            messages.success(request, f"Migration run {run.pk} started for {what}.")
            return HttpResponseRedirect(reverse("admin:fanout_migrationrun_change", args=[run.pk]))
    tenants = (form["tenants"].value() or "").strip()
    context = {
        **site.each_context(request),
        "title": f"Migrate {tenants.replace(',', ', ')}" if tenants else "Migrate all tenants",
        "form": form,
        "head": scripts.head_revision(scripts.default_location()),
        "back_url": back_url,
    }
    return TemplateResponse(request, "admin/fanout/start_run.html", context)
