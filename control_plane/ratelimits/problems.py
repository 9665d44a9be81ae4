"""The 429 a limit answers with (rendered by control_plane.http.problems, Retry-After included)."""

from __future__ import annotations

from tenants.problems import Problem


class RateLimited(Problem):
    status = 429
    title = "Too many requests"
