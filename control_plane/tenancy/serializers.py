"""Representations of the operator API: the form of its input here, state and rules in the
onboarding service."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from taskflow.api_versions import CATALOG
from taskflow.openapi import NOT_BLANK, refuse_longer_than_described
from tenants.models import RATE_LIMIT_CLASSES, Isolation, Plan, Tenant


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK})
class CheckedText(serializers.CharField):
    """Text the onboarding service checks: a blank one reaches it (as DRF's allow_blank would
    let it) and is refused there with its own message, so it is described as not blank
    (taskflow.serializers.NOT_BLANK)."""

    def run_validation(self, data: Any = empty) -> Any:
        if data == "" or (self.trim_whitespace and str(data).strip() == ""):
            return ""
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            refuse_longer_than_described(self, data)
        return super().to_internal_value(data)


# The shapes the onboarding service accepts, described and checked whole (no whitespace
# trimmed), so a value the description allows is never refused for its form. What remains for the
# service is state and rules: a slug or domain taken (409), a reserved slug or a domain that
# would never be served (422).
SLUG_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^(localhost|({_LABEL}\.)+{_LABEL})$"


class PatternText(serializers.CharField):
    """Text that must match `pattern` whole; described with the same pattern."""

    def __init__(self, pattern: str, message: str, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)
        self.whole = re.compile(pattern[1:-1])  # the ECMA anchors ^...$ as a fullmatch
        self.message = message

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if not self.whole.fullmatch(data):
            raise serializers.ValidationError(self.message)
        return data


@extend_schema_field({"type": "string", "maxLength": 40, "pattern": SLUG_PATTERN})
class SlugField(PatternText):
    def __init__(self) -> None:
        super().__init__(
            SLUG_PATTERN,
            "A lowercase letter, then 1-39 lowercase letters, digits or underscores.",
            max_length=40,
        )


@extend_schema_field({"type": "string", "maxLength": 253, "pattern": DOMAIN_PATTERN})
class DomainField(PatternText):
    def __init__(self) -> None:
        super().__init__(DOMAIN_PATTERN, "A DNS host name (or localhost).", max_length=253)


class OnboardingInputSerializer(serializers.Serializer[dict[str, Any]]):
    """The form of an onboarding request; the onboarding service decides what state allows."""

    name = CheckedText(max_length=200)
    slug = SlugField()
    domain = DomainField()
    isolation = serializers.ChoiceField(choices=Isolation.choices)
    owner_email = serializers.EmailField(max_length=254, trim_whitespace=False)


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
