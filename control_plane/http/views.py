"""Small plain views of the platform itself (not an API resource)."""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse

from tenants.outages import database_unavailable, is_connection_failure, unavailable_response
from tenants.problems import problem_response


def tenant_home(request: HttpRequest) -> JsonResponse:
    """What a tenant host answers at its root: which tenant this is and where its API lives."""
    tenant = request.tenant  # type: ignore[attr-defined]
    return JsonResponse(
        {"tenant": tenant.slug, "name": tenant.name, "status": tenant.status, "api": "/api/v1/"}
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(404, "Not found", f"Nothing is served at {request.path!r}.")


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 with Retry-After when what failed was reaching the database."""
    exc = sys.exc_info()[1]
    if exc is not None and is_connection_failure(exc):
        return unavailable_response(database_unavailable())
    return problem_response(500, "Internal server error", "The error has been logged.")
