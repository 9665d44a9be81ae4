"""What the tenant list and page show beside a tenant's own fields: where its rows live, its
revision against the head, its usage, and how long an onboarding has waited for a worker.

Read-only helpers for TenantAdmin (control_plane.tenancy.admin); they never change a tenant.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from control_plane.tenancy.models import Onboarding
from control_plane.worker.readiness import unconsumed_queues
from migrations_sqla import scripts
from taskflow.usage import tenant_usage
from tenants.binding import binding_for, tenant_session
from tenants.models import Isolation, Tenant, TenantStatus
from tenants.placement import SHARED_SCHEMA

PROVISIONING_QUEUE = "default"


def head_revision() -> str:
    """The Alembic head the fan-out takes tenants to."""
    return scripts.head_revision(scripts.default_location())


def placement_of(tenant: Tenant) -> str:
    """Where the tenant's TaskFlow rows live: its own schema, or `shared` for rls tenants."""
    if tenant.is_public:
        return "- (control plane)"
    return tenant.schema_name if tenant.isolation == Isolation.SCHEMA else SHARED_SCHEMA


def revision_cell(tenant: Tenant) -> SafeString:
    """The tenant's recorded Alembic revision, marked when it lags behind the head."""
    revision = (tenant.revisions or {}).get("alembic")
    if tenant.is_public or not revision:
        return format_html("{}", revision or "-")
    if revision != head_revision():
        return format_html(
            '<span class="tenant-revision tenant-revision--behind" title="behind head {}">{} (behind)</span>',
            head_revision(),
            revision,
        )
    return format_html('<span class="tenant-revision">{}</span>', revision)


class RevisionFilter(admin.SimpleListFilter):
    """Tenants behind the head revision (a fan-out missed or failed them), or at it."""

    title = "revision"
    parameter_name = "revision"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("behind", "Behind head"), ("head", "At head")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        tenants = queryset.exclude(schema_name="public")
        if self.value() == "behind":
            return tenants.exclude(revisions__alembic=head_revision())
        if self.value() == "head":
            return tenants.filter(revisions__alembic=head_revision())
        return queryset


def onboarding_wait(tenant: Tenant, onboarding: Onboarding | None) -> str:
    """While provisioning: how long it has waited, and whether any worker consumes its queue."""
    if onboarding is None or tenant.status != TenantStatus.PROVISIONING:
        return ""
    waited = int((timezone.now() - onboarding.requested_at).total_seconds())
    text = f"{waited // 60}m {waited % 60}s" if waited >= 60 else f"{waited}s"
    if PROVISIONING_QUEUE in (unconsumed_queues(wait=True) or ()):
        text += (
            f"; no worker consumes the {PROVISIONING_QUEUE} queue: provisioning starts when one"
            " does (celery -A control_plane worker -Q default,migrations,imports)"
        )
    return text


def usage_panel(tenant: Tenant) -> SafeString:
    """Rows, bytes of row data and the writing requests of the last day, read from the database."""
    if tenant.is_public or tenant.status in (TenantStatus.PROVISIONING, TenantStatus.FAILED):
        return SafeString("-")
    try:
        with tenant_session(binding_for(tenant)) as session:
            usage = tenant_usage(session)
    except Exception as exc:  # a missing schema must not break the tenant's page
        return format_html("unavailable ({})", type(exc).__name__)
    tables = ", ".join(f"{name} {count:,}" for name, count in usage.rows.items() if count)
    return format_html(
        '<dl id="tenant-usage" class="tenant-status-details">'
        '<dt>Rows</dt><dd id="tenant-usage-rows">{}</dd>'
        '<dt>Row data</dt><dd id="tenant-usage-bytes">{}</dd>'
        '<dt>Writing requests, last 24 h</dt><dd id="tenant-usage-requests">{}</dd>'
        "<dt>By table</dt><dd>{}</dd></dl>",
        f"{usage.total_rows:,}",
        human_bytes(usage.bytes),
        f"{usage.requests_last_day:,}",
        tables or "-",
    )


def human_bytes(size: int) -> str:
    """1,234,567 -> 1.2 MB: sizes an operator compares at a glance."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"
