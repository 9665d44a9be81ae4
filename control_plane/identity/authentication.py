"""Bearer-token authentication for the tenant API and the operator API.

A token authenticates only on its own tenant's host (staff tokens on the public host). Every
refusal — unknown, malformed, revoked, expired, another tenant's, no membership — is the same 401,
so a caller never learns that a token exists elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.principals import (
    CachedPrincipal,
    mark_used,
    read_principal,
    remember_principal,
)
from control_plane.identity.tokens import digests_match, parse_prefix, token_digest
from control_plane.observability.metrics import count_principal_lookup
from control_plane.ratelimits import auth_failures
from tenants.cache_epoch import current_epoch
from tenants.identity import Principal, Role

LAST_USED_GRANULARITY = timedelta(minutes=1)
INVALID = "Invalid or expired token."


class BearerTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[object, Principal] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            value = header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(INVALID) from exc
        return authenticate_token(
            value, tenant=getattr(request._request, "tenant", None), request=request._request
        )

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def authenticate_token(
    value: str, *, tenant: object, request: HttpRequest | None = None
) -> tuple[object, Principal]:
    """The user and principal of `value` on `tenant`'s host, or AuthenticationFailed.

    A warm token costs one Redis GET (control_plane.identity.principals) and no query; the user row is
    loaded only if a view reads more of it than its id. Failures are charged to the request's
    client address, and an address that spent its failures gets 429 before its token is looked
    up (control_plane.ratelimits.auth_failures).
    """
    prefix = parse_prefix(value)
    tenant_id = getattr(tenant, "pk", None)
    if prefix is None or tenant_id is None:
        auth_failures.record_failure(request)
        raise exceptions.AuthenticationFailed(INVALID)
    digest = token_digest(value)
    now = timezone.now()
    epoch = current_epoch()
    cached, seen = read_principal(digest, epoch, getattr(request, "cache_read_ahead", None))
    count_principal_lookup(hit=cached is not None)
    if cached is not None:
        if cached.principal.tenant_id != tenant_id or not cached.usable(now):
            auth_failures.record_failure(request)
            raise exceptions.AuthenticationFailed(INVALID)
        if cached.unused:  # primed by onboarding: this is the token's first use
            ApiToken.objects.filter(pk=cached.principal.token_id, last_used_at=None).update(
                last_used_at=now
            )
            mark_used(digest, cached, now, epoch)
        return TokenUser(cached.principal.user_id), cached.principal
    auth_failures.refuse_if_blocked(request)
    try:
        user, entry = _authenticate_from_database(prefix, value, tenant, now)
    except exceptions.AuthenticationFailed:
        auth_failures.record_failure(request)
        raise
    remember_principal(digest, entry, now, epoch, seen)
    return user, entry.principal


def _authenticate_from_database(
    prefix: str, value: str, tenant: object, now: datetime
) -> tuple[User, CachedPrincipal]:
    tenant_id = getattr(tenant, "pk", None)
    assert tenant_id is not None  # authenticate_token refused a request without a tenant
    # The token, its user and the user's role on this tenant in one statement: a cold token
    # (a new tenant's owner on its first request, an entry past its minute) is one round trip
    # fewer before its answer.
    role_here = Membership.objects.filter(user_id=OuterRef("user_id"), tenant_id=tenant_id)
    token = (
        ApiToken.objects.select_related("user")
        .annotate(membership_role=Subquery(role_here.values("role")[:1]))
        .filter(prefix=prefix)
        .first()
    )
    if (
        token is None
        or not digests_match(value, token.digest)
        or not token.is_usable(now)
        or token.tenant_id != tenant_id
        or not token.user.is_active
    ):
        raise exceptions.AuthenticationFailed(INVALID)
    user = token.user
    if getattr(tenant, "is_public", False):
        if not user.is_staff:
            raise exceptions.AuthenticationFailed(INVALID)
        role, is_staff = Role.ADMIN, True
    else:
        membership_role = token.membership_role
        if membership_role is None:
            raise exceptions.AuthenticationFailed(INVALID)
        role, is_staff = Role(membership_role), False
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    principal = Principal(
        user_id=user.pk, tenant_id=token.tenant_id, role=role, token_id=token.pk, is_staff=is_staff
    )
    return user, CachedPrincipal(principal, token.expires_at)


class TokenUser(SimpleLazyObject):
    """The token's user, loaded from the database only when a view reads more than its id.

    Authenticated by construction, so DRF's IsAuthenticated needs no query; isinstance(User)
    holds (the lazy object proxies its class) so it can be assigned to a foreign key.
    """

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user_id: int) -> None:
        self.__dict__["_user_id"] = user_id
        super().__init__(lambda: User.objects.get(pk=user_id))

    def __bool__(self) -> bool:
        return True

    @property
    def pk(self) -> int:
        user_id: int = self.__dict__["_user_id"]
        return user_id

    id = pk
