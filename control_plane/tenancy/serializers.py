"""Representations of the operator API (input is validated by the onboarding service)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tenants.models import Isolation, Tenant


class OnboardingInputSerializer(serializers.Serializer[dict[str, Any]]):
    """Shape only: types and presence. The onboarding service decides what is valid."""

    name = serializers.CharField(allow_blank=True, max_length=500)
    slug = serializers.CharField(allow_blank=True, max_length=500)
    domain = serializers.CharField(allow_blank=True, max_length=500)
    isolation = serializers.ChoiceField(choices=Isolation.choices)
    owner_email = serializers.CharField(allow_blank=True, max_length=500)


class TenantChangeSerializer(serializers.Serializer[dict[str, Any]]):
    """What an operator may change on a tenant with PATCH."""

    api_version = serializers.CharField(max_length=10)


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    domains = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = (
            "slug", "name", "isolation", "status", "status_reason", "schema_name",
            "domains", "revisions", "api_version", "created_at", "updated_at", "url",
        )  # fmt: skip

    def get_domains(self, tenant: Tenant) -> list[str]:
        pending = getattr(tenant, "onboarding", None)
        domains = [d.domain for d in tenant.domains.all()]
        return domains or ([pending.domain] if pending else [])

    def get_url(self, tenant: Tenant) -> str:
        return f"/ops/v1/tenants/{tenant.slug}"
