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
]


class InvalidInput(Problem):
    status = 400
    title = "Invalid input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            "The request has invalid fields.", errors=[{"field": field, "message": message}]
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
