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
