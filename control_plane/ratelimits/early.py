"""The tenant API's plan limits, checked as early as they can be: right after tenant
resolution, before URL dispatch, DRF's request, authentication, content negotiation and
rendering, so a refusal (429) costs little of the capacity it protects.

A request is checked here when its tenant is resolved, its bearer token is in the principal
cache (read in tenant resolution's own Redis round trip: tenants.resolution,
control_plane.identity.principals.keys_to_read_ahead) and its view is a DRF view under
TenantPlanThrottle with bearer authentication. Anything else (a token not cached yet, an invalid
one, another view) goes on to DRF, whose throttle checks it after authentication as before; a
request checked here is never charged twice. A token this layer finds unusable is left to
authentication's 401.

A refusal is remembered (control_plane.ratelimits.memo): the same client is refused again by
this process without a Redis round trip until the limiter would let it in.

It must stay after TenantMiddleware (it needs the tenant and the read-ahead) and never answer
anything but a 429 or the next layer's response.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_resolver
from django.utils import timezone

from control_plane.identity.authentication import BearerTokenAuthentication
from control_plane.identity.principals import cached_principal
from control_plane.identity.tokens import token_digest
from control_plane.ratelimits import limiter, policies
from control_plane.ratelimits.headers import CHECKED_ATTRIBUTE, remember
from control_plane.ratelimits.memo import REFUSALS
from control_plane.ratelimits.problems import refused_by
from control_plane.ratelimits.throttles import TenantPlanThrottle
from tenants.cache_epoch import current_epoch
from tenants.identity import Principal
from tenants.problems import PROBLEM_CONTENT_TYPE

API_PREFIX = "/api/"
# Paths carry ids, so the routes seen are many but bounded here; a miss costs one resolve.
ROUTES_CACHED = 4096


class EarlyRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not settings.RATE_LIMITS_ENABLED:
            return self.get_response(request)
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.is_public or not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        principal = warm_principal(request, tenant.pk)
        if principal is None:
            return self.get_response(request)
        match = limited_route(getattr(request, "urlconf", None), request.path_info)
        if match is None:
            return self.get_response(request)
        declared = getattr(match.func.cls, "rate_limit_class", None)  # type: ignore[attr-defined]
        limits = policies.limits_for(
            tenant=tenant,
            token_id=principal.token_id,
            klass=policies.request_class(request.method or "GET", declared),
        )
        decision = REFUSALS.refusal(limits)
        if decision is None:
            asked_at = time.monotonic()  # before Redis reads its clock (see memo.py)
            decision = limiter.check(limits)
            REFUSALS.remember(limits, decision, asked_at)
        remember(request, decision)
        setattr(request, CHECKED_ATTRIBUTE, True)
        if decision.allowed:
            return self.get_response(request)
        request.resolver_match = match  # the access line's and metrics' route
        request.auth = principal  # type: ignore[attr-defined]  # the access line's user
        return refusal_response(decision)


def warm_principal(request: HttpRequest, tenant_id: int) -> Principal | None:
    """The bearer token's principal on this tenant from what tenant resolution read ahead, or
    None (no bearer token, not cached, another tenant's, expired: authentication decides)."""
    read_ahead = getattr(request, "cache_read_ahead", None)
    if read_ahead is None:
        return None
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    cached = cached_principal(token_digest(parts[1]), current_epoch(), read_ahead)
    if cached is None or cached.principal.tenant_id != tenant_id:
        return None
    if not cached.usable(timezone.now()):
        return None
    return cached.principal


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


def refusal_response(decision: limiter.Decision) -> JsonResponse:
    """The 429 problem+json the throttle's refusal renders as, with Retry-After."""
    problem = refused_by(decision)
    response = JsonResponse(problem.to_dict(), status=429, content_type=PROBLEM_CONTENT_TYPE)
    response["Retry-After"] = str(problem.extra["retry_after"])
    return response
