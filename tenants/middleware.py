"""Request-level tenancy: probes that answer on any host, and tenant resolution by host name.

Resolution switches the Django connection to the tenant (django-tenants) for Django models only;
TaskFlow data is reached through a SQLAlchemy session bound by tenants.binding, never through a
search_path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from django.http import HttpRequest, HttpResponse, JsonResponse
from django_tenants.middleware.main import TenantMainMiddleware

from tenants.health import run_checks
from tenants.problems import problem_response

PROBE_PATHS = {"/healthz", "/readyz"}


class ProbeMiddleware:
    """/healthz and /readyz on every host, before tenant resolution, so probes by IP work too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in PROBE_PATHS:
            return self.get_response(request)
        if request.method not in {"GET", "HEAD"}:
            return problem_response(
                405, "Method not allowed", f"{request.method} is not allowed here"
            )
        if request.path == "/healthz":
            return JsonResponse({"status": "ok"})
        checks = run_checks()
        ready = all(check.ok for check in checks)
        return JsonResponse(
            {"status": "ready" if ready else "unavailable", "checks": [asdict(c) for c in checks]},
            status=200 if ready else 503,
        )


class TenantMiddleware(TenantMainMiddleware):
    """django-tenants' resolution with a problem+json 404 for a host no tenant owns."""

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        return problem_response(
            404, "Unknown host", f"No tenant is served at {hostname!r}.", host=hostname
        )
