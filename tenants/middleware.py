"""Request-level tenancy: probes that answer on any host, tenant resolution by host name, and the
cookie-based layers (sessions, CSRF, the admin's user, messages) on the public host only.

Resolution never switches Django's connection to the tenant's schema: every Django model a request
touches (tenants, domains, users, tokens, memberships, import jobs, sessions) lives in the public
schema, and TaskFlow data is reached through a SQLAlchemy session bound by tenants.binding, never
through a search_path. So a request leaves no schema on a pooled server connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import convert_exception_to_response
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import get_public_schema_name

from tenants.health import run_checks, run_warnings
from tenants.hosts import routing_host
from tenants.models import Domain, Tenant, TenantStatus
from tenants.outages import database_unavailable, is_connection_failure, unavailable_response
from tenants.problems import problem_response
from tenants.resolution import resolve_tenant, resolve_tenant_and_read

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
            {
                "status": "ready" if ready else "unavailable",
                "checks": [asdict(c) for c in checks],
                "warnings": run_warnings(),
            },
            status=200 if ready else 503,
        )


class TenantMiddleware(TenantMainMiddleware):
    """django-tenants' resolution, cached in Redis, with problem+json for hosts it cannot serve.

    A Host that ALLOWED_HOSTS refuses is a 400. A tenant that is not active is refused here,
    before any view: suspended and archived tenants get 403, a tenant still provisioning (or
    failed) 503. A database that cannot be reached, here or in a view (Django's ORM or
    SQLAlchemy), is 503 with Retry-After.
    """

    @staticmethod
    def hostname_from_request(request: HttpRequest) -> str:
        """The Domain to resolve: onboarding and routing normalise host names alike."""
        return routing_host(request.get_host())

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        super().__init__(get_response)
        path = getattr(settings, "TENANT_RESOLUTION_READS_ALSO", "")
        self.reads_also: Callable[[HttpRequest], list[str]] | None = (
            import_string(path) if path else None
        )
        path = getattr(settings, "TENANT_RESOLUTION_READER", "")
        self.reader: Callable[[HttpRequest, list[str]], dict[str, Any]] | None = (
            import_string(path) if path else None
        )

    def get_tenant(self, domain_model: type[Domain], hostname: str) -> Tenant:
        tenant = resolve_tenant(hostname)
        if tenant is None:
            raise domain_model.DoesNotExist
        return tenant

    def _resolve_for(self, request: HttpRequest, hostname: str) -> Tenant | None:
        """resolve_tenant, reading the cache keys settings.TENANT_RESOLUTION_READS_ALSO names
        for this request in the same round trip; what was asked and found goes on the request
        as `cache_read_ahead` ({"asked": keys, "found": entries}). settings
        TENANT_RESOLUTION_READER, when set, makes that round trip (given the request and the
        keys) and may do more in it (control_plane.ratelimits.prepaid)."""
        also = self.reads_also(request) if self.reads_also is not None else []
        if not also:
            return resolve_tenant(hostname)
        reader = self.reader
        read = None if reader is None else (lambda keys: reader(request, keys))
        tenant, found = resolve_tenant_and_read(hostname, also, read)
        request.cache_read_ahead = {"asked": frozenset(also), "found": found}  # type: ignore[attr-defined]
        return tenant

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        try:
            host = request.get_host()
        except DisallowedHost:  # django-tenants would answer an empty HTML 404
            return problem_response(
                400, "Invalid host", "The Host header is not one this platform serves."
            )
        try:
            response = self.resolve(request, host)
        except Exception as exc:
            if is_connection_failure(exc):
                return unavailable_response(database_unavailable())
            raise
        if response is not None:
            return response
        tenant: Tenant = request.tenant  # type: ignore[attr-defined]
        if tenant.is_public or tenant.status == TenantStatus.ACTIVE:
            return None
        if tenant.status in {TenantStatus.SUSPENDED, TenantStatus.ARCHIVED}:
            return problem_response(
                403,
                f"Tenant {tenant.status}",
                f"Tenant {tenant.slug!r} is {tenant.status}; its API is not available.",
                tenant_status=tenant.status,
            )
        refused = problem_response(
            503,
            "Tenant not available",
            f"Tenant {tenant.slug!r} is {tenant.status}.",
            tenant_status=tenant.status,
        )
        refused["Retry-After"] = "5"
        return refused

    def resolve(self, request: HttpRequest, host: str | None = None) -> HttpResponse | None:
        """django-tenants' process_request without `connection.set_tenant`: Django's connection
        stays on the public schema (where a previous user of it may not have left it). `host`:
        the request's validated Host, when the caller has it (get_host validates it again)."""
        if connection.schema_name != get_public_schema_name():  # type: ignore[attr-defined]
            connection.set_schema_to_public()  # type: ignore[attr-defined]  # sends no SQL
        hostname = self.hostname_from_request(request) if host is None else routing_host(host)
        tenant = self._resolve_for(request, hostname)
        if tenant is None:
            return self.no_tenant_found(request, hostname)
        tenant.domain_url = hostname
        request.tenant = tenant  # type: ignore[attr-defined]
        self.setup_url_routing(request)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_connection_failure(exception):
            return unavailable_response(database_unavailable())
        return None

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        return problem_response(
            404, "Unknown host", f"No tenant is served at {hostname!r}.", host=hostname
        )


class PublicHostMiddleware:
    """settings.PUBLIC_HOST_MIDDLEWARE (sessions, CSRF, the admin's user, messages), on the public
    host only.

    Tenant hosts serve an API authenticated by bearer tokens: no cookie is read or set there, so
    these layers would only cost time on every API request (and CSRF needs ambient credentials
    to matter). On the public host they run as if listed in MIDDLEWARE at this position,
    process_view hooks included. Place after TenantMiddleware, which sets request.tenant.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.view_hooks: list[Callable[..., HttpResponse | None]] = []
        handler: Any = get_response
        for path in reversed(settings.PUBLIC_HOST_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if hasattr(middleware, "process_exception") or hasattr(
                middleware, "process_template_response"
            ):
                raise TypeError(f"{path}: only process_request/view/response hooks are relayed")
            if hasattr(middleware, "process_view"):
                self.view_hooks.insert(0, middleware.process_view)
            handler = convert_exception_to_response(middleware)
        self.public = handler

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _on_public_host(request):
            response: HttpResponse = self.public(request)
            return response
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if not _on_public_host(request):
            return None
        for hook in self.view_hooks:
            response = hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None


def _on_public_host(request: HttpRequest) -> bool:
    """Without a resolved tenant, the safe answer: keep every layer."""
    tenant = getattr(request, "tenant", None)
    return tenant is None or bool(tenant.is_public)
