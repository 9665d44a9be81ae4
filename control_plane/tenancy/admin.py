"""Tenants and onboardings in the operators' admin: TenantAdmin with every action it offers.

Views stay thin: every change of a tenant's lifecycle goes through control_plane.tenancy
(onboarding, lifecycle) and every migration run through control_plane.fanout.runs, so the admin,
the operator API and the CLI share one set of rules. The owner's token is shown once in a message
and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from control_plane.fanout.start_admin import start_run_view
from control_plane.identity.admin import token_message
from control_plane.tenancy.lifecycle import (
    LifecycleConflict,
    pin_api_version,
    set_rate_limits,
    set_tenant_status,
)
from control_plane.tenancy.models import MoveStatus, Onboarding
from control_plane.tenancy.move_admin import moves_panel
from control_plane.tenancy.moves import MoveInProgress, request_move
from control_plane.tenancy.onboarding import (
    InvalidOnboarding,
    OnboardingInput,
    request_onboarding,
    retry_onboarding,
    validate_onboarding,
)
from control_plane.tenancy.tenant_columns import (
    RevisionFilter,
    onboarding_wait,
    placement_of,
    revision_cell,
    usage_panel,
)
from taskflow import api_versions
from tenants.models import Isolation, Tenant, TenantStatus

POLL_INTERVAL_MS = 1000
ONBOARDING_FIELDS = ("name", "slug", "domain", "isolation", "owner_email")


def api_version_choices() -> list[tuple[str, str]]:
    """The versions an operator can pin a tenant to, newest first, deprecated ones marked."""
    return [
        (v.name, f"{v.name} (deprecated)" if v.deprecated else v.name)
        for v in reversed(api_versions.CATALOG.versions)
    ]


def _operator(request: HttpRequest) -> User | None:
    """The signed-in operator as the service expects it (the admin only lets staff users in)."""
    return request.user if isinstance(request.user, User) else None


def _onboarding_of(tenant: Tenant) -> Onboarding | None:
    """The tenant's onboarding request; the public tenant and hand-made rows have none."""
    try:
        return tenant.onboarding
    except Onboarding.DoesNotExist:
        return None


# --- Tenants ---------------------------------------------------------------------------------


class TenantOnboardingForm(forms.ModelForm):
    """The only way to add a tenant: the onboarding service validates; this form only maps errors.

    Form fields check only presence and the isolation choice, so an operator sees the service's
    messages, the same ones the operator API returns.
    """

    name = forms.CharField(
        widget=forms.TextInput(attrs={"class": "vTextField"}),
        help_text="Shown to operators and in the tenant's API.",
    )
    slug = forms.CharField(
        help_text="2-40 lowercase letters, digits or underscores; names the schema t_&lt;slug&gt;."
    )
    domain = forms.CharField(
        widget=forms.TextInput(attrs={"class": "vTextField"}),
        help_text="The tenant's host name, for example acme.localhost.",
    )
    isolation = forms.ChoiceField(choices=Isolation.choices, initial=Isolation.SCHEMA)
    owner_email = forms.CharField(
        label="Owner email",
        widget=forms.EmailInput(attrs={"class": "vTextField"}),
        help_text="The owner's user; receives the first API token.",
    )

    onboarding: OnboardingInput | None = None

    class Meta:
        model = Tenant
        fields = ("name", "slug", "isolation")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        try:
            self.onboarding = validate_onboarding(
                **{field: str(cleaned.get(field) or "") for field in ONBOARDING_FIELDS}
            )
        except InvalidOnboarding as exc:
            for field, field_messages in exc.errors.items():
                if field in self.errors:
                    continue  # the form already said it (a missing value): say it once
                for message in field_messages:
                    self.add_error(field if field in self.fields else None, message)
            return cleaned
        cleaned.update(
            name=self.onboarding.name,
            slug=self.onboarding.slug,
            domain=self.onboarding.domain,
            owner_email=self.onboarding.owner_email,
        )
        return cleaned


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "isolation",
        "placement",
        "status",
        "status_reason",
        "revision",
        "api_version",
        "domain_list",
        "created_at",
    )
    list_filter = ("isolation", "status", RevisionFilter, "api_version", "plan")
    search_fields = ("name", "slug", "domains__domain")
    ordering = ("name",)
    actions = (
        "suspend",
        "activate",
        "archive",
        "retry",
        "move_to_schema",
        "move_to_rls",
        "migrate_selected_tenants",
        "migrate_all_tenants",
    )
    add_fieldsets = ((None, {"fields": ONBOARDING_FIELDS}),)
    change_fieldsets = (
        (None, {"fields": ("name", "slug", "placement", "isolation", "revision", "domains_panel")}),
        ("Status", {"fields": ("status_panel",)}),
        ("API", {"fields": ("api_version",)}),
        ("Rate limits", {"fields": ("plan", "rate_limits")}),
        ("Moves", {"fields": ("moves",)}),
        ("Usage", {"fields": ("usage",)}),
        ("Onboarding", {"fields": ("owner_email", "requested_by", "created_at")}),
    )
    change_readonly_fields = (
        "slug",
        "placement",
        "isolation",
        "revision",
        "moves",
        "usage",
        "domains_panel",
        "status_panel",
        "owner_email",
        "requested_by",
        "created_at",
    )

    class Media:
        css = {"all": ("control_plane/tenant_status.css",)}
        js = ("control_plane/tenant_status.js", "control_plane/live_refresh.js")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return (
            super()
            .get_queryset(request)
            .select_related("onboarding", "onboarding__requested_by")
            .prefetch_related("domains")
        )

    def get_fieldsets(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.change_fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        return () if obj is None else self.change_readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Tenant | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Tenant]]:
        if obj is None:
            kwargs["form"] = TenantOnboardingForm
        return super().get_form(request, obj, change, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        """Tenants are archived, never deleted here: a delete would orphan their storage."""
        return False

    # -- adding = onboarding --

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except LifecycleConflict as exc:
            # A concurrent request took the slug or domain between validation and insert.
            self.message_user(request, exc.detail, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Tenant | None = None,
    ) -> HttpResponse:
        # "Add another" would be a second onboarding; "continue" on add has nothing to edit yet.
        context.update(show_save_and_add_another=False)
        if add:
            context.update(title="Onboard a tenant", show_save_and_continue=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "api_version":
            return forms.ChoiceField(
                choices=api_version_choices(),
                label="API version",
                help_text="What clients that send no TaskFlow-Version header get.",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            if "api_version" in form.changed_data:
                pin_api_version(obj, obj.api_version)  # and forget the cached resolution
            if {"plan", "rate_limits"} & set(form.changed_data):
                set_rate_limits(obj, plan=obj.plan, rate_limits=obj.rate_limits)
            return
        if not isinstance(form, TenantOnboardingForm) or form.onboarding is None:
            raise TypeError("a tenant is added only through a valid TenantOnboardingForm")
        requested = request_onboarding(data=form.onboarding, requested_by=_operator(request))
        # The service made the row; this unsaved instance becomes it for the admin's log and redirect.
        obj.pk = requested.onboarding.tenant_id
        obj.refresh_from_db()
        self.message_user(
            request,
            token_message(
                f"Owner API token of {obj.slug}", requested.token or requested.token_note
            ),
            messages.SUCCESS,
        )

    def response_add(
        self, request: HttpRequest, obj: Tenant, post_url_continue: str | None = None
    ) -> HttpResponse:
        self.message_user(
            request, f"Onboarding of {obj.slug} requested; provisioning started.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[obj.pk]))

    # -- columns and read-only fields --

    @admin.display(description="")
    def action_checkbox(self, obj: Tenant) -> SafeString:
        """The control-plane tenant has no lifecycle: its row cannot be ticked for an action."""
        return SafeString("") if obj.is_public else super().action_checkbox(obj)

    @admin.display(description="Rows live in", ordering="schema_name")
    def placement(self, obj: Tenant) -> str:
        return placement_of(obj)

    @admin.display(description="Revision")
    def revision(self, obj: Tenant) -> SafeString:
        return revision_cell(obj)

    @admin.display(description="Moves")
    def moves(self, obj: Tenant) -> SafeString:
        return moves_panel(obj)

    @admin.display(description="Usage")
    def usage(self, obj: Tenant) -> SafeString:
        return usage_panel(obj)

    @admin.display(description="Domains")
    def domain_list(self, obj: Tenant) -> str:
        return domains_of(obj)

    @admin.display(description="Domains")
    def domains_panel(self, obj: Tenant) -> SafeString:
        """Updated by tenant_status.js: the domain row appears when provisioning succeeds."""
        return format_html('<span id="tenant-domains">{}</span>', domains_of(obj))

    @admin.display(description="Owner email")
    def owner_email(self, obj: Tenant) -> str:
        onboarding = _onboarding_of(obj)
        return onboarding.owner_email if onboarding else "-"

    @admin.display(description="Requested by")
    def requested_by(self, obj: Tenant) -> str:
        onboarding = _onboarding_of(obj)
        return str(onboarding.requested_by) if onboarding and onboarding.requested_by else "-"

    @admin.display(description="Status")
    def status_panel(self, obj: Tenant) -> SafeString:
        """Rendered once here, then kept current by tenant_status.js polling status_view."""
        state = tenant_state(obj)
        rows = format_html_join(
            "",
            '<dt>{}</dt><dd id="{}">{}</dd>',
            (
                ("Reason", "tenant-status-reason", state["status_reason"] or "-"),
                ("Attempts", "tenant-attempts", _or_dash(state["attempts"])),
                ("Provisioning ms", "tenant-provisioning-ms", _or_dash(state["provisioning_ms"])),
                ("Waiting", "tenant-waiting", state["waiting"] or "-"),
            ),
        )
        return format_html(
            '<div id="tenant-status-panel" data-status-url="{}" data-poll-ms="{}" '
            'data-status="{}" aria-live="polite">'
            '<span id="tenant-status" class="tenant-status tenant-status--{}">{}</span>'
            '<dl class="tenant-status-details">{}</dl></div>',
            reverse("admin:tenants_tenant_status", args=[obj.pk]),
            POLL_INTERVAL_MS,
            state["status"],
            state["status"],
            state["status"],
            rows,
        )

    # -- status endpoint --

    def get_urls(self) -> list[URLPattern]:
        status = path(
            "<path:object_id>/status/",
            self.admin_site.admin_view(self.status_view),
            name="tenants_tenant_status",
        )
        migrate = path(
            "migrate/",
            self.admin_site.admin_view(self.migrate_view),
            name="tenants_tenant_migrate",
        )
        return [status, migrate, *super().get_urls()]

    def migrate_view(self, request: HttpRequest) -> HttpResponse:
        """The form that starts a migration run (all tenants, or those in ?tenants=)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        return start_run_view(
            request,
            self.admin_site,
            operator=_operator(request),
            back_url=reverse("admin:tenants_tenant_changelist"),
        )

    def status_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The tenant's status as JSON, polled by the change page while it provisions."""
        tenant = self.get_object(request, unquote(object_id))
        if tenant is None:
            raise Http404("No such tenant.")
        if not self.has_view_permission(request, tenant):
            raise PermissionDenied
        return JsonResponse(tenant_state(tenant))  # admin_view already marks it never-cache

    # -- actions --

    @admin.action(description="Suspend selected tenants…", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponse | None:
        """Asks for the reason first; it is recorded on the tenant and shown with its status."""
        reason = str(request.POST.get("status_reason", "")).strip()
        if request.POST.get("confirm_status") != "yes" or not reason:
            return self._confirm_status(
                request, queryset, title="Suspend tenants", submit="Suspend", ask_reason=True,
                explanation="Their API answers 403 until they are activated again.",
            )  # fmt: skip
        self._apply(
            request,
            queryset,
            "suspended",
            lambda t: set_tenant_status(t, TenantStatus.SUSPENDED, reason=reason),
        )
        return None

    @admin.action(description="Activate selected tenants", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._apply(
            request, queryset, "activated", lambda t: set_tenant_status(t, TenantStatus.ACTIVE)
        )

    @admin.action(description="Archive selected tenants…", permissions=["change"])
    def archive(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponse | None:
        """Asks for confirmation first: an archived tenant is no longer served, and can be purged."""
        if request.POST.get("confirm_status") != "yes":
            return self._confirm_status(
                request, queryset, title="Archive tenants", submit="Yes, archive", ask_reason=True,
                explanation="Archived tenants are no longer served; their data stays until"
                " `manage.py purge_tenant` drops it for good.",
            )  # fmt: skip
        reason = str(request.POST.get("status_reason", ""))
        self._apply(
            request,
            queryset,
            "archived",
            lambda t: set_tenant_status(t, TenantStatus.ARCHIVED, reason=reason),
        )
        return None

    def _confirm_status(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        *,
        title: str,
        submit: str,
        explanation: str,
        ask_reason: bool,
    ) -> TemplateResponse:
        """The page that asks before a status change; it posts the same action and selection back."""
        keep = ("action", "select_across", "index", helpers.ACTION_CHECKBOX_NAME)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "explanation": explanation,
            "tenants": queryset.exclude(schema_name="public"),
            "fields": [(k, v) for k in keep for v in request.POST.getlist(k)],
            "action_url": request.get_full_path(),
            "back_url": request.get_full_path(),
            "ask_reason": ask_reason,
            "reason": request.POST.get("status_reason", ""),
            "submit_label": submit,
        }
        return TemplateResponse(request, "admin/tenants/tenant/confirm_status.html", context)

    @admin.action(description="Retry onboarding of selected failed tenants", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._apply(request, queryset, "queued for provisioning again", retry_onboarding)

    @admin.action(description="Move selected tenants to their own schema", permissions=["change"])
    def move_to_schema(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._queue_moves(request, queryset, Isolation.SCHEMA)

    @admin.action(
        description="Move selected tenants to the shared (RLS) schema", permissions=["change"]
    )
    def move_to_rls(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._queue_moves(request, queryset, Isolation.RLS)

    def _queue_moves(self, request: HttpRequest, queryset: QuerySet[Tenant], to: str) -> None:
        """Each move is recorded and runs in a worker; a refused one is recorded failed with its
        reason and said here; the moves list shows them all as they go."""
        queued: list[str] = []
        for tenant in queryset.exclude(schema_name="public").exclude(isolation=to):
            try:
                move = request_move(tenant, to, requested_by=_operator(request))
            except MoveInProgress as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                continue
            if move.status == MoveStatus.FAILED:
                self.message_user(request, f"Move {move.pk} refused: {move.error}", messages.ERROR)
            else:
                queued.append(f"{tenant.slug} (move {move.pk})")
        if queued:
            self.message_user(
                request,
                format_html(
                    '{} queued to move to {} mode: {}. <a href="{}">Follow them in Tenant moves</a>.',
                    len(queued), to, ", ".join(queued),
                    reverse("admin:control_plane_tenantmove_changelist"),
                ),
                messages.SUCCESS,
            )  # fmt: skip
        staying = queryset.filter(isolation=to).count()
        if staying:
            self.message_user(request, f"{staying} already in {to} mode.", messages.WARNING)

    @admin.action(description="Migrate selected tenants…", permissions=["change"])
    def migrate_selected_tenants(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> HttpResponse | None:
        """The run form for the selected tenants that have a schema of their own."""
        slugs = list(
            queryset.filter(isolation=Isolation.SCHEMA)
            .exclude(schema_name="public")
            .values_list("slug", flat=True)
        )
        if not slugs:
            self.message_user(
                request, "None of the selected tenants has a schema of its own.", messages.WARNING
            )
            return None
        form = reverse("admin:tenants_tenant_migrate")
        return HttpResponseRedirect(f"{form}?{urlencode({'tenants': ','.join(slugs)})}")

    @admin.action(description="Migrate all tenants…", permissions=["change"])
    def migrate_all_tenants(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> HttpResponse | None:
        """Every schema-mode tenant, whatever is selected (the list's button needs no selection)."""
        return HttpResponseRedirect(reverse("admin:tenants_tenant_migrate"))

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        done: str,
        change: Callable[[Tenant], object],
    ) -> None:
        """Apply a service call to each tenant on its own; a refused one is reported, not fatal."""
        changed: list[str] = []
        for tenant in queryset:
            try:
                with transaction.atomic():
                    change(tenant)
            except LifecycleConflict as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                changed.append(tenant.slug)
        if changed:
            self.message_user(
                request, f"{len(changed)} {done}: {', '.join(changed)}.", messages.SUCCESS
            )


def tenant_state(tenant: Tenant) -> dict[str, Any]:
    """What the status panel shows, in the shape of the status endpoint."""
    onboarding = _onboarding_of(tenant)
    return {
        "status": tenant.status,
        "status_reason": tenant.status_reason,
        "attempts": onboarding.attempts if onboarding else None,
        "provisioning_ms": onboarding.provisioning_ms if onboarding else None,
        "waiting": onboarding_wait(tenant, onboarding),
        "domains": domains_of(tenant),
    }


def domains_of(tenant: Tenant) -> str:
    """The tenant's host names; until provisioning makes the row, the requested one, pending."""
    domains = [d.domain for d in tenant.domains.all()]
    if domains:
        return ", ".join(domains)
    onboarding = _onboarding_of(tenant)
    return f"{onboarding.domain} (pending)" if onboarding else "-"


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


# --- Onboardings -----------------------------------------------------------------------------


@admin.register(Onboarding)
class OnboardingAdmin(admin.ModelAdmin):
    """A read-only record: onboardings are made by the tenant add form or the operator API."""

    list_display = (
        "tenant",
        "domain",
        "owner_email",
        "status",
        "attempts",
        "provisioning_ms",
        "requested_at",
    )
    list_filter = ("status",)
    search_fields = ("tenant__slug", "domain", "owner_email")
    list_select_related = ("tenant",)
    fields = (
        "tenant",
        "domain",
        "owner_email",
        "token_prefix",
        "requested_by",
        "status",
        "attempts",
        "error",
        "requested_at",
        "finished_at",
        "provisioning_ms",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Onboarding | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Onboarding | None = None) -> bool:
        return False


__all__ = [
    "OnboardingAdmin",
    "TenantAdmin",
    "TenantOnboardingForm",
    "tenant_state",
]
