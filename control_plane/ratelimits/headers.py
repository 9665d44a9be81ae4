"""The rate limit headers of draft-ietf-httpapi-ratelimit-headers, from a request's Decision.

`RateLimit-Policy` lists every limit the request fell under (`"tenant-reads";q=1200;w=60`);
`RateLimit` reports the one closest to refusing (`"token-reads";r=17;t=42`: requests remaining,
seconds until it is whole again). A refusal also carries Retry-After (the problem handler's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from control_plane.ratelimits.limiter import Decision

REQUEST_ATTRIBUTE = "rate_limit_decision"
# Set when the request's plan limits were checked (control_plane.ratelimits.early): the throttle
# does not charge it again.
CHECKED_ATTRIBUTE = "rate_limit_checked"


def remember(request: HttpRequest, decision: Decision) -> None:
    setattr(request, REQUEST_ATTRIBUTE, decision)


def header_values(decision: Decision) -> dict[str, str]:
    tightest = decision.tightest
    if tightest is None:
        return {}
    policy = ", ".join(
        f'"{s.limit.name}";q={s.limit.quota};w={s.limit.window}' for s in decision.states
    )
    current = f'"{tightest.limit.name}";r={tightest.remaining};t={math.ceil(tightest.reset)}'
    return {"RateLimit-Policy": policy, "RateLimit": current}


class RateLimitHeadersMiddleware:
    """Writes the headers of the decision a throttle or authentication left on the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        decision: Decision | None = getattr(request, REQUEST_ATTRIBUTE, None)
        if decision is not None and decision.enforced:
            for name, value in header_values(decision).items():
                response[name] = value
        return response
