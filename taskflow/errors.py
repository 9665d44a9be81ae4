"""TaskFlow's domain errors; the one exception handler renders each as problem+json."""

from __future__ import annotations

from typing import Any

from tenants.problems import NotFound, Problem

__all__ = [
    "Conflict",
    "InvalidCursor",
    "InvalidInput",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "Unprocessable",
]


class InvalidInput(Problem):
    status = 400
    title = "Invalid input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            "The request has invalid fields.", errors=[{"field": field, "message": message}]
        )


class Unprocessable(Problem):
    """Well-formed input refused by a rule or by what it refers to (a project_id naming no live
    project): 422, so that a client can tell it from a malformed request (400). Clients at
    API versions before 2026-12-01 get 400 (taskflow.api_versions)."""

    status = 422
    title = "Unprocessable content"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            "The request is well-formed but cannot be carried out.",
            errors=[{"field": field, "message": message}],
        )


class InvalidCursor(Problem):
    status = 400
    title = "Invalid cursor"


class Conflict(Problem):
    """A write lost to another (stale version in the body, or caught by the version column)."""

    status = 409
    title = "Conflict"

    def __init__(self, detail: str, *, current: dict[str, Any] | None = None) -> None:
        extra: dict[str, Any] = {}
        if current is not None:
            extra = {"current_version": current.get("version"), "current": current}
        super().__init__(detail, **extra)


class PreconditionFailed(Conflict):
    status = 412
    title = "Precondition failed"


class PreconditionRequired(Problem):
    status = 428
    title = "Precondition required"
