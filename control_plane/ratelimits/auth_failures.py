"""Failed authentication, limited per client address: a client guessing tokens gets 429 after
RATE_LIMIT_AUTH_FAILURES failures per window, before its next guess is even looked at.

Only failures are charged: a valid token costs nothing here, and a warm (cached) valid token
is never checked at all (control_plane.identity.authentication asks only on its database path).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from control_plane.ratelimits import limiter, policies
from control_plane.ratelimits.headers import remember
from control_plane.ratelimits.problems import RateLimited


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the last X-Forwarded-For hop when a proxy we trust appends it."""
    if settings.RATE_LIMIT_TRUST_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def refuse_if_blocked(request: HttpRequest | None) -> None:
    """429 when the request's address has spent its failures (nothing charged)."""
    if request is None or not settings.RATE_LIMITS_ENABLED:
        return
    decision = limiter.check([policies.auth_failure_limit(client_address(request))], commit=False)
    if not decision.allowed:
        _refuse(request, decision)


def record_failure(request: HttpRequest | None) -> None:
    """Charge one failure to the request's address; 429 if that was one too many."""
    if request is None or not settings.RATE_LIMITS_ENABLED:
        return
    decision = limiter.check([policies.auth_failure_limit(client_address(request))])
    if not decision.allowed:
        _refuse(request, decision)


def _refuse(request: HttpRequest, decision: limiter.Decision) -> None:
    remember(request, decision)
    seconds = limiter.retry_after_seconds(decision)
    raise RateLimited(
        f"Too many failed authentications from this address; retry in {seconds}s.",
        retry_after=seconds,
        limit="auth-failures",
    )
