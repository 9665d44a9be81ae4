"""Who is calling, as the tenant API sees it: a principal, never a request or a token row."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """Roles are ordered: an owner may do what an admin may, an admin what a member may."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller bound to one tenant (staff principals to the public tenant)."""

    user_id: int
    tenant_id: int
    role: Role
    token_id: int
    is_staff: bool = False


def principal_of(request: object) -> Principal:
    """The principal a DRF request authenticated as (views reached only after IsAuthenticated)."""
    auth = getattr(request, "auth", None)
    if not isinstance(auth, Principal):
        raise TypeError("request is not authenticated by a bearer token")
    return auth
