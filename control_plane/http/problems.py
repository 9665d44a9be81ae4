"""The one DRF exception handler: every API error leaves as application/problem+json."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tenants.problems import PROBLEM_CONTENT_TYPE, Problem, problem_body


def _validation_errors(detail: Any) -> list[dict[str, str]]:
    """Flatten DRF's nested error dict into [{field, message}], the shape clients can loop over."""
    errors: list[dict[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        else:
            errors.append({"field": path or "non_field_errors", "message": str(value)})

    walk(detail, "")
    return errors


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Problem):
        problem = Response(exc.to_dict(), status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
        retry_after = exc.extra.get("retry_after")
        if retry_after is not None:
            problem["Retry-After"] = str(retry_after)
        return problem
    if isinstance(exc, RequestDataTooBig):  # Django's own would be an HTML 400
        return Response(
            problem_body(413, "Content too large", str(exc)),
            status=413,
            content_type=PROBLEM_CONTENT_TYPE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    status = response.status_code
    title = {
        400: "Invalid input",
        401: "Not authenticated",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        406: "Not acceptable",
        415: "Unsupported media type",
        429: "Too many requests",
    }.get(status, "Error")
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        extra["errors"] = _validation_errors(exc.detail)
        detail = "The request has invalid fields."
    else:
        detail = str(exc.detail)
    response.data = problem_body(status, title, detail, **extra)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
