"""The per-tenant and per-token limits of the tenant API, as a DRF throttle (settings
REST_FRAMEWORK DEFAULT_THROTTLE_CLASSES): DRF runs it after authentication, so the token is known.

Most requests are checked before this, by control_plane.ratelimits.early (a warm token, known
from the principal cache without authenticating); this throttle checks the rest (a token not
cached yet) and nothing twice.

A view names its class with `rate_limit_class = "imports"` (or "exports"); other requests are
reads or writes by method. The public host's operator API is not limited by plan.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from control_plane.ratelimits import limiter, policies
from control_plane.ratelimits.headers import CHECKED_ATTRIBUTE, remember
from control_plane.ratelimits.problems import refused_by
from tenants.identity import Principal


class TenantPlanThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        if not settings.RATE_LIMITS_ENABLED or getattr(request._request, CHECKED_ATTRIBUTE, False):
            return True
        tenant = getattr(request._request, "tenant", None)
        if tenant is None or tenant.is_public:
            return True
        method = (request.method or "GET").lower()
        if method not in view.http_method_names or not hasattr(view, method):
            return True  # DRF answers 405 next: a method the view does not serve is not charged
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
            raise refused_by(decision)
        return True

    def wait(self) -> float | None:  # refusals raise RateLimited, which carries its own
        return None
