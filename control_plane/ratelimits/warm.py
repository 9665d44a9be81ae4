"""What a warm request's plan limits are, from what the caches hold, before URL dispatch and
authentication: its bearer token's cached principal, its route (a view TenantPlanThrottle limits
by bearer token, and one that serves the request's method) and the limits that follow.

Used by the early check (control_plane.ratelimits.early), which leaves what it worked out for
the charge made in tenant resolution's round trip (control_plane.ratelimits.prepaid). It reads
no cache and sends nothing: its callers pass what was read.

A method the route does not serve is not limited: DRF answers it 405 without running the view,
so charging it would spend a client's quota on a request the platform never served (and could
answer a 429 where the truth is a 405). A method the principal's role may not use (403) is
charged like any other request: deciding it needs the view's permission logic (authentication,
DRF's request), which is what this layer runs before so that a flood costs little, and a client
sending forbidden writes over and over is a flood like any other. (A token's first request,
authenticated from the database, goes through DRF, which checks permissions before throttles:
there a 403 is not charged.)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.http import HttpRequest
from django.urls import Resolver404, ResolverMatch, get_resolver
from django.utils import timezone

from control_plane.identity.authentication import BearerTokenAuthentication
from control_plane.identity.principals import CachedPrincipal, cached_principal
from control_plane.identity.tokens import token_digest
from control_plane.ratelimits import policies
from control_plane.ratelimits.limiter import Limit
from control_plane.ratelimits.throttles import TenantPlanThrottle
from tenants.cache_epoch import current_epoch
from tenants.identity import Principal

API_PREFIX = "/api/"
# Paths carry ids, so the routes seen are many but bounded here; a miss costs one resolve.
ROUTES_CACHED = 4096


def warm_principal(
    request: HttpRequest, tenant_id: int, read_ahead: Mapping[str, Any] | None
) -> CachedPrincipal | None:
    """The bearer token's cached principal on this tenant from `read_ahead` (what tenant
    resolution read), or None (no bearer token, not cached, another tenant's, expired:
    authentication decides)."""
    if read_ahead is None:
        return None
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return usable_on(
        cached_principal(token_digest(parts[1]), current_epoch(), read_ahead), tenant_id
    )


def usable_on(cached: CachedPrincipal | None, tenant_id: int) -> CachedPrincipal | None:
    """The cached principal if it is this tenant's and its token has not expired, else None."""
    if cached is None or cached.principal.tenant_id != tenant_id:
        return None
    if not cached.usable(timezone.now()):
        return None
    return cached


@lru_cache(maxsize=ROUTES_CACHED)
def limited_route(urlconf: str | None, path: str) -> ResolverMatch | None:
    """The route of `path` when its view is one TenantPlanThrottle limits by bearer token."""
    try:
        match = get_resolver(urlconf).resolve(path)
    except Resolver404:
        return None
    view: Any = getattr(match.func, "cls", None)  # DRF's as_view() sets it
    if view is None:
        return None
    throttles = getattr(view, "throttle_classes", ())
    authenticators = getattr(view, "authentication_classes", ())
    if not any(issubclass(t, TenantPlanThrottle) for t in throttles):
        return None
    if not any(issubclass(a, BearerTokenAuthentication) for a in authenticators):
        return None
    return match


def serves(match: ResolverMatch, method: str) -> bool:
    """Whether the route's view has a handler for `method` (else DRF answers 405)."""
    view: Any = match.func.cls  # type: ignore[attr-defined]
    name = method.lower()
    allowed = getattr(match.func, "initkwargs", {}).get("http_method_names", view.http_method_names)
    if name not in allowed:
        return False
    actions = getattr(match.func, "actions", None)  # a ViewSet: the methods its route maps
    if actions is not None:
        return name in actions or name == "options" or (name == "head" and "get" in actions)
    return hasattr(view, name) or (name == "head" and hasattr(view, "get"))


def limits_of(
    request: HttpRequest, tenant: Any, principal: Principal, match: ResolverMatch
) -> list[Limit]:
    """The plan limits of a request by `principal` to `match`'s view on `tenant`."""
    declared = getattr(match.func.cls, "rate_limit_class", None)  # type: ignore[attr-defined]
    return policies.limits_for(
        tenant=tenant,
        token_id=principal.token_id,
        klass=policies.request_class(request.method or "GET", declared),
    )
