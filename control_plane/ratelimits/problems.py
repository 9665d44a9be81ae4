"""The 429 a limit answers with (rendered by control_plane.http.problems, Retry-After included,
or by the early middleware, control_plane.ratelimits.early)."""

from __future__ import annotations

from control_plane.ratelimits import limiter
from tenants.problems import Problem


class RateLimited(Problem):
    status = 429
    title = "Too many requests"


def refused_by(decision: limiter.Decision) -> RateLimited:
    """The 429 of a refusal: which limit was spent, and when to retry (whole seconds)."""
    refused = min(decision.states, key=lambda s: s.remaining).limit
    seconds = limiter.retry_after_seconds(decision)
    return RateLimited(
        f"The {refused.name} limit ({refused.quota} per {refused.window}s) is spent; "
        f"retry in {seconds}s.",
        retry_after=seconds,
        limit=refused.name,
    )
