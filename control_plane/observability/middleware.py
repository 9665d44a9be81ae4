"""The outermost layer of every request: its id, its log context, its access line and metrics.

First in MIDDLEWARE, before ProblemResponseMiddleware: the id is echoed on every response,
problem+json errors and probes included, and the timing covers the whole stack. GET /metrics is
answered here too, before tenant resolution (control_plane.observability.exposition).

It must never raise: recording a metric or a log line failing costs the line, not the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from control_plane.observability import metrics, request_ids
from control_plane.observability.exposition import metrics_response
from control_plane.observability.logging import ACCESS_LOGGER, access_line
from tenants.binding import request_id_of
from tenants.identity import Principal
from tenants.middleware import PROBE_PATHS

logger = structlog.get_logger().bind(logger=ACCESS_LOGGER)
UNMATCHED = "unmatched"


class ObservationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.metrics_path = settings.METRICS_PATH
        self.metrics_on = metrics.enabled()
        self.access_log = settings.ACCESS_LOG

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        request_id = request_id_of(request)
        request.request_id = request_id  # type: ignore[attr-defined]  # tenants.binding reads it
        token = request_ids.enter(request_id)
        try:
            if request.path == self.metrics_path:
                response: HttpResponseBase = metrics_response(request)
            else:
                response = self.get_response(request)
                self._observe(request, response, time.perf_counter() - started)
            response[request_ids.HEADER] = request_id
            return response
        finally:
            request_ids.leave(token)

    def _observe(self, request: HttpRequest, response: HttpResponseBase, seconds: float) -> None:
        try:
            match = request.resolver_match
            if match is not None and match.route:
                route = "/" + match.route
            else:  # the probes answer before URL resolution; anything else matched no route
                route = request.path if request.path in PROBE_PATHS else UNMATCHED
            tenant = getattr(request, "tenant", None)
            slug = getattr(tenant, "slug", "") or ("public" if tenant is not None else "")
            isolation = (
                "public"
                if tenant is not None and tenant.is_public
                else str(getattr(tenant, "isolation", "") or "none")
            )
            method = request.method or ""
            status = response.status_code
            if self.metrics_on:
                metrics.observe_request(
                    route=route,
                    method=method,
                    status=status,
                    isolation=isolation,
                    tenant=slug or "none",
                    seconds=seconds,
                )
            if self.access_log:
                principal = getattr(request, "auth", None)
                access_line(
                    {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "tenant": slug or None,
                        "isolation": isolation,
                        "user_id": principal.user_id if isinstance(principal, Principal) else None,
                    }
                )
        except Exception:  # never the request's problem
            logger.warning("observing the request failed", exc_info=True)


class TenantLogContextMiddleware:
    """Right after tenant resolution: the tenant's slug and isolation mode on every log line the
    request writes from here on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        tenant = getattr(request, "tenant", None)
        if tenant is not None and not tenant.is_public:
            structlog.contextvars.bind_contextvars(
                tenant=tenant.slug, isolation=str(tenant.isolation)
            )
        return self.get_response(request)
