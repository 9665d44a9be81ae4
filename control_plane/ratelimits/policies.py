"""Which limits a request falls under: its tenant's plan (or an operator's override), its class
(reads, writes, imports, exports), and its token's share of the tenant's limit.

Quotas are requests per RATE_LIMIT_WINDOW_SECONDS (settings RATE_LIMIT_PLANS); a tenant's
`rate_limits` overrides any of its plan's classes. A token may use RATE_LIMIT_TOKEN_SHARE of its
tenant's quota, so one runaway script cannot take every other client of its tenant down with it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from control_plane.ratelimits.limiter import Limit
from tenants.models import RATE_LIMIT_CLASSES

CLASSES = RATE_LIMIT_CLASSES
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def request_class(method: str, declared: str | dict[str, str] | None) -> str:
    """A view's declared class (`rate_limit_class = "exports"`, or by method:
    `{"POST": "imports"}`), else reads or writes by method."""
    scope = declared.get(method) if isinstance(declared, dict) else declared
    if scope in CLASSES:
        return str(scope)
    return "reads" if method in READ_METHODS else "writes"


def tenant_quotas(tenant: Any) -> dict[str, int]:
    """The tenant's quota per class: its plan's, with its operator overrides on top."""
    plans: dict[str, dict[str, int]] = settings.RATE_LIMIT_PLANS
    quotas = dict(
        plans.get(getattr(tenant, "plan", "") or "", plans[settings.RATE_LIMIT_DEFAULT_PLAN])
    )
    overrides = getattr(tenant, "rate_limits", None) or {}
    quotas.update({k: int(v) for k, v in overrides.items() if k in CLASSES})
    return quotas


def limits_for(*, tenant: Any, token_id: int | None, klass: str) -> list[Limit]:
    """The tenant's limit of this class and, for a token, the token's share of it."""
    quota = tenant_quotas(tenant)[klass]
    window = settings.RATE_LIMIT_WINDOW_SECONDS
    prefix = settings.RATE_LIMIT_KEY_PREFIX
    limits = [Limit(f"tenant-{klass}", f"{prefix}:t:{tenant.pk}:{klass}", quota, window)]
    if token_id is not None:
        share = max(1, int(quota * settings.RATE_LIMIT_TOKEN_SHARE))
        limits.append(Limit(f"token-{klass}", f"{prefix}:k:{token_id}:{klass}", share, window))
    return limits


def auth_failure_limit(address: str) -> Limit:
    """Failed authentications one client address may make per window."""
    return Limit(
        "auth-failures",
        f"{settings.RATE_LIMIT_KEY_PREFIX}:a:{address}",
        settings.RATE_LIMIT_AUTH_FAILURES,
        settings.RATE_LIMIT_WINDOW_SECONDS,
    )
