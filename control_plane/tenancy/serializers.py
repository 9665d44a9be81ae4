"""Representations of the operator API (input is validated by the onboarding service)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from taskflow.api_versions import CATALOG
from taskflow.openapi import NOT_BLANK
from tenants.models import RATE_LIMIT_CLASSES, Isolation, Plan, Tenant


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 500, "pattern": NOT_BLANK})
class CheckedText(serializers.CharField):
    """Text the onboarding service checks: a blank one reaches it (as DRF's allow_blank would
    let it) and is refused there with its own message, so it is described as not blank
    (taskflow.serializers.NOT_BLANK)."""

    def run_validation(self, data: Any = empty) -> Any:
        if data == "" or (self.trim_whitespace and str(data).strip() == ""):
            return ""
        return super().run_validation(data)


class OnboardingInputSerializer(serializers.Serializer[dict[str, Any]]):
    """Shape only: types and presence. The onboarding service decides what is valid."""

    name = CheckedText(max_length=500)
    slug = CheckedText(max_length=500)
    domain = CheckedText(max_length=500)
    isolation = serializers.ChoiceField(choices=Isolation.choices)
    owner_email = CheckedText(max_length=500)


@extend_schema_field({"type": "string", "enum": list(CATALOG.names)})
class ApiVersionField(serializers.CharField):
    """A version of the TaskFlow API, described as the catalog's names; an unknown one is
    refused by lifecycle.pin_api_version with the known ones listed."""


@extend_schema_field(
    {
        "type": "object",
        "description": "Requests per rate limit window by class, over the plan's; {} for the "
        "plan's own.",
        "properties": {
            k: {"type": "integer", "minimum": 1, "maximum": 10**9} for k in RATE_LIMIT_CLASSES
        },
        "additionalProperties": False,
    }
)
class RateLimitsField(serializers.JSONField):
    """Checked by lifecycle.set_rate_limits, which names what is wrong."""


class TenantChangeSerializer(serializers.Serializer[dict[str, Any]]):
    """What an operator may change on a tenant with PATCH (each field optional)."""

    api_version = ApiVersionField(max_length=10, required=False)
    plan = serializers.ChoiceField(choices=Plan.choices, required=False)
    rate_limits = RateLimitsField(required=False)


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    domains = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = (
            "slug", "name", "isolation", "status", "status_reason", "schema_name",
            "domains", "revisions", "api_version", "plan", "rate_limits", "created_at",
            "updated_at", "url",
        )  # fmt: skip

    def get_domains(self, tenant: Tenant) -> list[str]:
        pending = getattr(tenant, "onboarding", None)
        domains = [d.domain for d in tenant.domains.all()]
        return domains or ([pending.domain] if pending else [])

    def get_url(self, tenant: Tenant) -> str:
        return f"/ops/v1/tenants/{tenant.slug}"
