"""A provisioned tenant's life: status transitions, moves between placements, and purge.

Onboarding (control_plane.tenancy.onboarding) brings a tenant to life; from there the admin, the
operator API and the CLI change its status, move it and finally purge it through these services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from taskflow import api_versions
from taskflow.usage import tenant_usage
from tenants.binding import binding_for, tenant_session
from tenants.models import Isolation, Plan, Tenant, TenantStatus, validate_rate_limits
from tenants.problems import Problem
from tenants.provisioning import drop_storage
from tenants.resolution import forget_tenant


class LifecycleConflict(Problem):
    """The tenant's state refuses the change: a slug, domain or idempotency key already taken by
    another onboarding, or a transition, retry or purge its current status does not allow."""

    status = 409
    title = "Onboarding conflict"  # the title clients have always received; kept byte-identical


STATUS_TRANSITIONS = {
    TenantStatus.SUSPENDED: (TenantStatus.ACTIVE,),
    TenantStatus.ACTIVE: (TenantStatus.SUSPENDED, TenantStatus.ARCHIVED),
    TenantStatus.ARCHIVED: (TenantStatus.ACTIVE, TenantStatus.SUSPENDED),
}


def set_tenant_status(tenant: Tenant, status: str, *, reason: str = "") -> Tenant:
    """Suspend, activate or archive a provisioned tenant; the change is conditional on the status
    it comes from, so two operators cannot both apply a transition from a stale page. `reason`
    (why it was suspended or archived) is recorded as the status reason; activating clears it."""
    allowed = (
        STATUS_TRANSITIONS.get(TenantStatus(status), ()) if status in TenantStatus.values else ()
    )
    changed = (
        Tenant.objects.filter(pk=tenant.pk, status__in=allowed)
        .exclude(schema_name="public")
        .update(status=status, status_reason=reason.strip()[:1000], updated_at=timezone.now())
    )
    tenant.refresh_from_db()
    if not changed:
        raise LifecycleConflict(
            f"Tenant {tenant.slug!r} is {tenant.status}; it cannot become {status}."
        )
    forget_tenant(tenant)  # now, and settled once the transaction commits
    return tenant


class UnknownApiVersion(Problem):
    status = 400
    title = "Unknown API version"


def pin_api_version(tenant: Tenant, version: str) -> Tenant:
    """Move the tenant's clients that name no version to `version` of the TaskFlow API."""
    catalog = api_versions.CATALOG
    if catalog.get(version) is None:
        raise UnknownApiVersion(
            f"{version[:40]!r} is not a version of the TaskFlow API; "
            f"known versions: {', '.join(catalog.names)}.",
            known_versions=list(catalog.names),
        )
    Tenant.objects.filter(pk=tenant.pk).update(api_version=version, updated_at=timezone.now())
    tenant.refresh_from_db()
    forget_tenant(tenant)  # now, and settled once the transaction commits
    return tenant


class InvalidRateLimits(Problem):
    status = 400
    title = "Invalid rate limits"


def set_rate_limits(
    tenant: Tenant, *, plan: str | None = None, rate_limits: dict[str, int] | None = None
) -> Tenant:
    """Put the tenant on `plan` and/or replace its per-class overrides (an empty dict: the
    plan's limits); the next request resolves the tenant, and its limits, afresh."""
    changes: dict[str, object] = {}
    if plan is not None:
        if plan not in Plan.values:
            raise InvalidRateLimits(
                f"{plan[:40]!r} is not a plan; known plans: {', '.join(Plan.values)}.",
                known_plans=list(Plan.values),
            )
        changes["plan"] = plan
    if rate_limits is not None:
        try:
            validate_rate_limits(rate_limits)
        except ValidationError as exc:
            raise InvalidRateLimits(" ".join(exc.messages)) from exc
        changes["rate_limits"] = rate_limits
    if changes:
        Tenant.objects.filter(pk=tenant.pk).update(**changes, updated_at=timezone.now())
        tenant.refresh_from_db()
        forget_tenant(tenant)  # now, and settled once the transaction commits
    return tenant


@dataclass(frozen=True)
class PurgeReport:
    """What a purge dropped: the placement, the tenant's rows there, its control-plane rows."""

    placement: str
    rows: dict[str, int] = field(default_factory=dict)
    public_rows: dict[str, int] = field(default_factory=dict)


def purge_tenant(tenant: Tenant) -> PurgeReport:
    """Drop an archived tenant's storage and its rows in the public schema. Irreversible."""
    if tenant.status != TenantStatus.ARCHIVED:
        raise LifecycleConflict(
            f"Tenant {tenant.slug!r} is {tenant.status}; only archived tenants are purged."
        )
    binding = binding_for(tenant)
    placement = (
        f"schema {binding.schema}"
        if tenant.isolation == Isolation.SCHEMA
        else f"rows in {binding.schema}"
    )
    try:
        with tenant_session(binding) as session:
            rows = tenant_usage(session).rows
    except Exception:  # storage already gone (an earlier purge stopped half way): nothing to count
        rows = {}
    forget_tenant(tenant)
    drop_storage(tenant)
    with transaction.atomic():
        _, public_rows = tenant.delete()
    return PurgeReport(placement=placement, rows=rows, public_rows=dict(public_rows))
