"""The operator API on the public host: onboard, list, inspect, suspend and activate tenants."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.identity.permissions import IsStaffPrincipal
from control_plane.tenancy import lifecycle, onboarding
from control_plane.tenancy.serializers import (
    OnboardingInputSerializer,
    TenantChangeSerializer,
    TenantSerializer,
)
from tenants.models import Tenant, TenantStatus
from tenants.problems import NotFound

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _tenants() -> QuerySet[Tenant]:
    return (
        Tenant.objects.exclude(schema_name="public")
        .select_related("onboarding")
        .prefetch_related("domains")
        .order_by("slug")
    )


def _tenant(slug: str) -> Tenant:
    tenant = _tenants().filter(slug=slug).first()
    if tenant is None:
        raise NotFound(f"No tenant {slug!r}.")
    return tenant


class OpsView(APIView):
    permission_classes = (IsStaffPrincipal,)


class TenantCollection(OpsView):
    def get(self, request: Request) -> Response:
        tenants = _tenants()
        status = request.query_params.get("status")
        if status:
            tenants = tenants.filter(status=status)
        return Response({"results": TenantSerializer(tenants, many=True).data})

    def post(self, request: Request) -> Response:
        shape = OnboardingInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        requested = onboarding.submit_onboarding(
            fields=shape.validated_data,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER) or None,
            requested_by=request.user,  # type: ignore[arg-type]
        )
        tenant = requested.onboarding.tenant
        body = {
            "tenant": TenantSerializer(_tenant(tenant.slug)).data,
            "owner_token": requested.token,
            "replayed": not requested.created,
        }
        if requested.token is None:
            body["owner_token_note"] = requested.token_note
        location = f"/ops/v1/tenants/{tenant.slug}"
        return Response(body, status=202, headers={"Location": location})


class TenantDetail(OpsView):
    def get(self, request: Request, slug: str) -> Response:
        return Response(TenantSerializer(_tenant(slug)).data)

    def patch(self, request: Request, slug: str) -> Response:
        changes = TenantChangeSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        tenant = lifecycle.pin_api_version(_tenant(slug), changes.validated_data["api_version"])
        return Response(TenantSerializer(_tenant(tenant.slug)).data)


class TenantTransition(OpsView):
    target: str = ""

    def post(self, request: Request, slug: str) -> Response:
        tenant = lifecycle.set_tenant_status(_tenant(slug), self.target)
        return Response(TenantSerializer(tenant).data)


class SuspendTenant(TenantTransition):
    target = TenantStatus.SUSPENDED


class ActivateTenant(TenantTransition):
    target = TenantStatus.ACTIVE


class ArchiveTenant(TenantTransition):
    target = TenantStatus.ARCHIVED


class RetryTenant(OpsView):
    def post(self, request: Request, slug: str) -> Response:
        onboarding.retry_onboarding(_tenant(slug))
        return Response(TenantSerializer(_tenant(slug)).data, status=202)
