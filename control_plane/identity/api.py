"""Identity as a tenant's API caller sees it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.http.openapi import ME
from taskflow.openapi import DeclaredQuery
from tenants.identity import principal_of


class Me(DeclaredQuery, APIView):
    """Who the token belongs to and what it may do in this tenant."""

    @extend_schema(operation_id="getMe", responses={200: ME})
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        tenant = request._request.tenant  # type: ignore[attr-defined]
        return Response(
            {
                "user": {"id": request.user.pk, "email": getattr(request.user, "email", "")},
                "tenant": tenant.slug,
                "role": principal.role.value,
            }
        )
