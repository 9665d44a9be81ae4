"""RFC 9457 problem details: the platform's one error shape for every API.

Domain errors subclass `Problem`; `control_plane.http.problems.problem_exception_handler` renders them
and DRF's own errors. This module must never import an API framework's views or a product module.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """A domain error that knows its HTTP status and how to describe itself."""

    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return problem_body(self.status, self.title, self.detail, type_=self.type, **self.extra)


class NotFound(Problem):
    status = 404
    title = "Not found"


def problem_body(
    status: int, title: str, detail: str = "", *, type_: str = "about:blank", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_response(status: int, title: str, detail: str = "", **extra: Any) -> JsonResponse:
    """A problem+json response for code that runs outside DRF (middleware, plain views)."""
    return JsonResponse(
        problem_body(status, title, detail, **extra),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
    )
