"""Who may call the operator API: staff principals authenticated on the public host."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.identity import Principal


class IsStaffPrincipal(BasePermission):
    message = "The operator API needs a staff token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Principal) and request.auth.is_staff


class IsStaff(BasePermission):
    """A staff principal (bearer token), or a staff user signed in to the admin (session)."""

    message = "The operator API's description needs a staff token or a staff sign-in."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, Principal):
            return request.auth.is_staff
        user = request.user
        return bool(user is not None and user.is_authenticated and user.is_staff)
