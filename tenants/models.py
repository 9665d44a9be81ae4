"""Tenant and Domain: who the platform serves and on which host names (public schema)."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Isolation(models.TextChoices):
    SCHEMA = "schema", "Schema per tenant"
    RLS = "rls", "Shared schema with row-level security"


class TenantStatus(models.TextChoices):
    PROVISIONING = "provisioning", "Provisioning"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    ARCHIVED = "archived", "Archived"
    FAILED = "failed", "Failed"


class Plan(models.TextChoices):
    """What a tenant pays for; its rate limits per plan are in settings RATE_LIMIT_PLANS."""

    FREE = "free", "Free"
    STANDARD = "standard", "Standard"
    ENTERPRISE = "enterprise", "Enterprise"


# What a tenant's requests are limited by, each class separately (control_plane.ratelimits).
RATE_LIMIT_CLASSES = ("reads", "writes", "imports", "exports")


def validate_rate_limits(value: object) -> None:
    """An operator's override: {class: requests per window}, known classes, whole numbers >= 1."""
    if not isinstance(value, dict):
        raise ValidationError("Rate limits must be an object of {class: requests per window}.")
    unknown = sorted(set(value) - set(RATE_LIMIT_CLASSES))
    if unknown:
        raise ValidationError(
            f"Unknown rate limit classes {unknown}; known: {list(RATE_LIMIT_CLASSES)}."
        )
    for key, quota in value.items():
        if isinstance(quota, bool) or not isinstance(quota, int) or not 1 <= quota <= 10**9:
            raise ValidationError(f"Rate limit {key!r} must be a whole number from 1 to 10^9.")


def schema_name_for(slug: str) -> str:
    """The schema a tenant's rows live in when it is in schema mode."""
    return f"t_{slug}"


class Tenant(TenantMixin):
    """One customer of the platform.

    `schema_name` is `t_<slug>` in both modes: in schema mode it is the tenant's own schema;
    in rls mode the schema does not exist and the name is the one a move to schema mode takes.
    Storage is provisioned by tenants.provisioning, never by django-tenants' auto_create_schema.
    """

    schema_name: str
    auto_create_schema = False
    auto_drop_schema = False

    name: models.CharField[str, str] = models.CharField(max_length=200)
    slug: models.SlugField[str, str] = models.SlugField(max_length=40, unique=True)
    isolation: models.CharField[str, str] = models.CharField(
        max_length=10, choices=Isolation.choices, default=Isolation.SCHEMA
    )
    status: models.CharField[str, str] = models.CharField(
        max_length=20,
        choices=TenantStatus.choices,
        default=TenantStatus.PROVISIONING,
        db_index=True,
    )
    status_reason: models.TextField[str, str] = models.TextField(blank=True, default="")
    # The migration revisions the tenant's storage is at ({"django": ..., "alembic": ...}), so a
    # fan-out can skip tenants already at its target without opening their schema.
    revisions: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(
        default=dict, blank=True
    )
    # The dated TaskFlow API version its clients get when they do not ask for one: the newest at
    # onboarding, moved only by an operator. Empty means the newest (taskflow.api_versions).
    api_version: models.CharField[str, str] = models.CharField(
        max_length=10, blank=True, default=""
    )
    plan: models.CharField[str, str] = models.CharField(
        max_length=20, choices=Plan.choices, default=Plan.STANDARD
    )
    # An operator's per-tenant quotas ({"reads": 5000, ...}, requests per window) over its plan's
    # (control_plane.ratelimits.policies).
    rate_limits: models.JSONField[dict[str, int], dict[str, int]] = models.JSONField(
        default=dict, blank=True, validators=[validate_rate_limits]
    )
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return bool(self.schema_name == "public")


class Domain(DomainMixin):
    """A host name that routes to one tenant; the tenant's primary one is its canonical host."""

    class Meta:
        ordering = ("domain",)

    def __str__(self) -> str:
        return str(self.domain)


class SpareSchema(models.Model):
    """A schema cloned ahead of time from the template, waiting to become a tenant's.

    Onboarding renames one (about a millisecond) instead of cloning (tens of milliseconds); a
    spare whose template revision is no longer current is never handed out, and refilling drops it.
    """

    name: models.CharField[str, str] = models.CharField(max_length=63, unique=True)
    fingerprint: models.CharField[str, str] = models.CharField(max_length=200, db_index=True)
    revisions: models.JSONField[dict[str, str], dict[str, str]] = models.JSONField(default=dict)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ReadSwitch(models.Model):
    """Which shape of the data the application reads while an evolution is under way.

    One row per switch (for example `tasks.due` = `due_date` or `due_at`), set by the control
    plane's evolutions (switch phase and its rollback) and read by tenant-facing code through
    tenants.switches (cached a moment per process), so a rolling deploy needs no restart.
    """

    name: models.CharField[str, str] = models.CharField(max_length=100, primary_key=True)
    value: models.CharField[str, str] = models.CharField(max_length=100)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
