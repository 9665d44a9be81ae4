"""The per-tenant and per-token limits of the tenant API, as a DRF throttle (settings
REST_FRAMEWORK DEFAULT_THROTTLE_CLASSES): DRF runs it after authentication, so the token is known.

A view names its class with `rate_limit_class = "imports"` (or "exports"); other requests are
reads or writes by method. The public host's operator API is not limited by plan.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from control_plane.ratelimits import limiter, policies
from control_plane.ratelimits.headers import remember
from control_plane.ratelimits.problems import RateLimited
from tenants.identity import Principal


class TenantPlanThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        if not settings.RATE_LIMITS_ENABLED:
            return True
        tenant = getattr(request._request, "tenant", None)
        if tenant is None or tenant.is_public:
            return True
        principal = request.auth if isinstance(request.auth, Principal) else None
        klass = policies.request_class(
            request.method or "GET", getattr(view, "rate_limit_class", None)
        )
        decision = limiter.check(
            policies.limits_for(
                tenant=tenant,
                token_id=principal.token_id if principal is not None else None,
                klass=klass,
            )
        )
        remember(request._request, decision)
        if not decision.allowed:
            refused = min(decision.states, key=lambda s: s.remaining).limit
            seconds = limiter.retry_after_seconds(decision)
            raise RateLimited(
                f"The {refused.name} limit ({refused.quota} per {refused.window}s) is spent; "
                f"retry in {seconds}s.",
                retry_after=seconds,
                limit=refused.name,
            )
        return True

    def wait(self) -> float | None:  # refusals raise RateLimited, which carries its own
        return None
