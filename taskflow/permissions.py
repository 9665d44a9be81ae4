"""Who may do what in a tenant: viewers read, members write, admins also delete and restore."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.identity import Principal, Role

METHOD_ROLES = {
    "GET": Role.VIEWER,
    "HEAD": Role.VIEWER,
    "OPTIONS": Role.VIEWER,
    "POST": Role.MEMBER,
    "PATCH": Role.MEMBER,
    "PUT": Role.MEMBER,
    "DELETE": Role.ADMIN,
}


class TenantRole(BasePermission):
    """A view may raise the role a method needs with `required_roles = {"POST": Role.ADMIN}`."""

    message = "Your role in this tenant does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal) or principal.is_staff:
            return False
        needed = getattr(view, "required_roles", {}).get(
            request.method, METHOD_ROLES.get(request.method or "", Role.ADMIN)
        )
        params = request.query_params  # `in` first: a QueryDict's get raises inside on a miss
        if "include_deleted" in params and params.get("include_deleted") in {"1", "true"}:
            needed = max(needed, Role.ADMIN, key=lambda r: r.rank)
        return principal.role.allows(needed)
