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

A warm request is usually charged before it gets here, in tenant resolution's own round trip
(control_plane.ratelimits.prepaid), with the limits this layer worked out for the same keys,
method and path before: this layer then takes that decision and sends nothing.
Which requests are limited, and by which limits, is control_plane.ratelimits.warm's: a method
the route does not serve (DRF's 405) is not charged.

A refusal is remembered (control_plane.ratelimits.memo): the same client is refused again by
this process without a Redis round trip until the limiter would let it in.

It must stay after TenantMiddleware (it needs the tenant and the read-ahead) and never answer
anything but a 429 or the next layer's response.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch

from control_plane.ratelimits import limiter
from control_plane.ratelimits.headers import CHECKED_ATTRIBUTE, remember
from control_plane.ratelimits.memo import REFUSALS
from control_plane.ratelimits.prepaid import PREPAID_ATTRIBUTE, Prepaid, learn
from control_plane.ratelimits.problems import refused_by
from control_plane.ratelimits.warm import (
    API_PREFIX,
    limited_route,
    limits_of,
    serves,
    warm_principal,
)
from tenants.identity import Principal
from tenants.problems import PROBLEM_CONTENT_TYPE


class EarlyRateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not settings.RATE_LIMITS_ENABLED:
            return self.get_response(request)
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.is_public or not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        checked = prepaid_check(request, tenant.pk) or check(request, tenant)
        if checked is None:
            return self.get_response(request)
        principal, match, decision = checked
        remember(request, decision)
        setattr(request, CHECKED_ATTRIBUTE, True)
        if decision.allowed:
            return self.get_response(request)
        request.resolver_match = match  # the access line's and metrics' route
        request.auth = principal  # type: ignore[attr-defined]  # the access line's user
        return refusal_response(decision)


Checked = tuple[Principal, ResolverMatch, limiter.Decision]


def prepaid_check(request: HttpRequest, tenant_id: int) -> Checked | None:
    """The decision of the charge made in tenant resolution's round trip, from the values the
    request resolved from (control_plane.ratelimits.prepaid), or None when none was made."""
    prepaid: Prepaid | None = getattr(request, PREPAID_ATTRIBUTE, None)
    if prepaid is None or prepaid.tenant_id != tenant_id:
        return None
    REFUSALS.remember(prepaid.limits, prepaid.decision, prepaid.asked_at)
    return prepaid.principal, prepaid.match, prepaid.decision


def check(request: HttpRequest, tenant: Any) -> Checked | None:
    """Check (and charge) a warm token's plan limits here, or None when the request is not one
    this layer limits (DRF's throttle decides)."""
    cached = warm_principal(request, tenant.pk, getattr(request, "cache_read_ahead", None))
    if cached is None:
        return None
    principal = cached.principal
    match = limited_route(getattr(request, "urlconf", None), request.path_info)
    if match is None or not serves(match, request.method or "GET"):
        return None
    limits = limits_of(request, tenant, principal, match)
    decision = REFUSALS.refusal(limits)
    if decision is None:
        asked_at = time.monotonic()  # before Redis reads its clock (see memo.py)
        decision = limiter.check(limits)
        REFUSALS.remember(limits, decision, asked_at)
    if decision.enforced:  # the next such request is charged in resolution's round trip
        expires_at = None if cached.expires_at is None else cached.expires_at.timestamp()
        learn(request, tenant, principal, expires_at, match, limits)
    return principal, match, decision


def refusal_response(decision: limiter.Decision) -> JsonResponse:
    """The 429 problem+json the throttle's refusal renders as, with Retry-After."""
    problem = refused_by(decision)
    response = JsonResponse(problem.to_dict(), status=429, content_type=PROBLEM_CONTENT_TYPE)
    response["Retry-After"] = str(problem.extra["retry_after"])
    return response
