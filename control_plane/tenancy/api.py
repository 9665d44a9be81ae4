"""The operator API on the public host: onboard, list, inspect, suspend and activate tenants."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.http.openapi import (
    CONTROL_CHARACTER,
    IDEMPOTENCY,
    ONBOARDING_ACCEPTED,
    TENANT_LIST,
    TENANT_LIST_QUERY,
    TRANSITION,
)
from control_plane.identity.permissions import IsStaffPrincipal
from control_plane.tenancy import lifecycle, onboarding
from control_plane.tenancy.models import Onboarding
from control_plane.tenancy.serializers import (
    OnboardingInputSerializer,
    TenantChangeSerializer,
    TenantSerializer,
)
from taskflow.openapi import LOCATION_HEADER, DeclaredQuery, problems
from tenants.models import Tenant, TenantStatus
from tenants.problems import NotFound

IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFER_WAIT = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    description=(
        "`wait=N` (RFC 7240): answer 201 once the tenant is active, waiting at most N seconds"
        f" ({onboarding.MAX_WAIT_SECONDS} at most); still provisioning or failed by then: 202,"
        " as without it. Other preferences are ignored."
    ),
)

MAX_KEY_LENGTH: int = Onboarding._meta.get_field("idempotency_key").max_length or 0


def _idempotency_key(request: Request) -> str | None:
    """The header's key, or 400 when its column could not hold it."""
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise ValidationError({IDEMPOTENCY_HEADER: [f"At most {MAX_KEY_LENGTH} characters."]})
    if key is not None and CONTROL_CHARACTER.search(key):  # a NUL could never reach the column
        raise ValidationError({IDEMPOTENCY_HEADER: ["No control characters."]})
    return key


def _preferred_wait(request: Request) -> float | None:
    """Seconds of `Prefer: wait=N` (RFC 7240), capped; None when not asked for."""
    for preference in request.headers.get("Prefer", "").replace(";", ",").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None  # a preference the server cannot read is ignored (RFC 7240)
            if seconds != seconds or seconds <= 0:  # NaN or nothing to wait for
                return None
            return min(seconds, onboarding.MAX_WAIT_SECONDS)
    return None


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


class OpsView(DeclaredQuery, APIView):
    permission_classes = (IsStaffPrincipal,)


@extend_schema_view(
    get=extend_schema(
        operation_id="listTenants", summary="Tenants by slug", responses={200: TENANT_LIST}
    ),
    post=extend_schema(
        operation_id="onboardTenant",
        summary="Onboard a tenant (a worker provisions it)",
        request=OnboardingInputSerializer,
        parameters=[IDEMPOTENCY, PREFER_WAIT, LOCATION_HEADER],
        responses={201: ONBOARDING_ACCEPTED, 202: ONBOARDING_ACCEPTED, **problems(409, 422)},
    ),
)
class TenantCollection(OpsView):
    query_parameters = {"get": TENANT_LIST_QUERY}

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
            idempotency_key=_idempotency_key(request),
            requested_by=request.user,  # type: ignore[arg-type]
        )
        tenant = requested.onboarding.tenant
        status, headers = 202, {"Location": f"/ops/v1/tenants/{tenant.slug}"}
        wait = _preferred_wait(request)
        if wait is not None:
            headers["Preference-Applied"] = f"wait={wait:g}"
            if onboarding.wait_for_provisioning(requested.onboarding, wait):
                tenant, status = _tenant(tenant.slug), 201
        elif not requested.created:
            tenant = _tenant(tenant.slug)  # a new one is in hand whole: no domains yet
        body = {
            "tenant": TenantSerializer(tenant).data,
            "owner_token": requested.token,
            "replayed": not requested.created,
        }
        if requested.token is None:
            body["owner_token_note"] = requested.token_note
        return Response(body, status=status, headers=headers)


@extend_schema_view(
    get=extend_schema(
        operation_id="getTenant", summary="A tenant", responses={200: TenantSerializer}
    ),
    patch=extend_schema(
        operation_id="updateTenant",
        summary="Move a tenant's API version pin, plan or rate limits",
        request=TenantChangeSerializer,
        responses={200: TenantSerializer, **problems(409)},
    ),
)
class TenantDetail(OpsView):
    def get(self, request: Request, slug: str) -> Response:
        return Response(TenantSerializer(_tenant(slug)).data)

    def patch(self, request: Request, slug: str) -> Response:
        changes = TenantChangeSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        data = changes.validated_data
        tenant = _tenant(slug)
        if "api_version" in data:
            tenant = lifecycle.pin_api_version(tenant, data["api_version"])
        if "plan" in data or "rate_limits" in data:
            tenant = lifecycle.set_rate_limits(
                tenant, plan=data.get("plan"), rate_limits=data.get("rate_limits")
            )
        return Response(TenantSerializer(_tenant(tenant.slug)).data)


@extend_schema_view(post=TRANSITION)
class TenantTransition(OpsView):
    target: str = ""

    def post(self, request: Request, slug: str) -> Response:
        tenant = lifecycle.set_tenant_status(_tenant(slug), self.target)
        return Response(TenantSerializer(tenant).data)


@extend_schema_view(post=extend_schema(operation_id="suspendTenant"))
class SuspendTenant(TenantTransition):
    target = TenantStatus.SUSPENDED


@extend_schema_view(post=extend_schema(operation_id="activateTenant"))
class ActivateTenant(TenantTransition):
    target = TenantStatus.ACTIVE


@extend_schema_view(post=extend_schema(operation_id="archiveTenant"))
class ArchiveTenant(TenantTransition):
    target = TenantStatus.ARCHIVED


@extend_schema_view(
    post=extend_schema(
        operation_id="retryTenantOnboarding",
        summary="Retry a failed onboarding, or a stuck one (no message waiting, no live worker)",
        request=None,
        responses={202: TenantSerializer, **problems(409)},
    )
)
class RetryTenant(OpsView):
    def post(self, request: Request, slug: str) -> Response:
        onboarding.retry_onboarding(_tenant(slug))
        return Response(TenantSerializer(_tenant(slug)).data, status=202)
