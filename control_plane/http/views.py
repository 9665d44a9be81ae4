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


API_LINKS = {
    "docs": "/api/v1/docs",
    "schema": "/api/v1/schema",
    "changelog": "/api/v1/changelog",
    "me": "/api/v1/me",
    "projects": "/api/v1/projects",
    "tasks": "/api/v1/tasks",
    "export": "/api/v1/tasks/export",
    "imports": "/api/v1/imports",
}


def api_root(request: HttpRequest) -> JsonResponse:
    """The API's root, the link the README and the tenant's home give: where everything is.
    Public, like the description: the resources it links to need a bearer token."""
    return JsonResponse({"tenant": request.tenant.slug, "links": API_LINKS})  # type: ignore[attr-defined]


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(404, "Not found", f"Nothing is served at {request.path!r}.")


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 with Retry-After when what failed was reaching the database."""
    exc = sys.exc_info()[1]
    if exc is not None and is_connection_failure(exc):
        return unavailable_response(database_unavailable())
    return problem_response(500, "Internal server error", "The error has been logged.")
