"""The platform's outermost layer: no request leaves without problem+json when it failed.

Django answers some failures itself, before or around any view, in HTML: the DEBUG pages (the
technical 404, and the technical 500 that lists settings, passwords in database URLs included),
a disallowed Host, a body past DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields. This layer turns
every error response that is not already application/problem+json into one, keeping the status
and the headers, on every host and path, except the admin's own pages on the public host (HTML
for humans) and the probes (their JSON is their contract). It also refuses a NUL in the query
string up front: PostgreSQL text cannot hold one, so it could only fail later, as a 500.

It must stay first in MIDDLEWARE after the observation layer (control_plane.observability), must
never raise (an exception here would be rendered by Django, DEBUG page included), and must never
read the Host (reading a disallowed one raises).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from tenants.middleware import PROBE_PATHS
from tenants.problems import PROBLEM_CONTENT_TYPE, problem_response

ADMIN_PREFIX = "/admin/"
# A response's own headers that describe its old body, not the request's outcome.
BODY_HEADERS = {"content-type", "content-length", "content-encoding", "content-disposition"}


class ProblemResponseMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in query or "%00" in query:
            return problem_response(
                400, "Invalid input", "A query parameter contains a NUL character."
            )
        response = self.get_response(request)
        if response.status_code < 400 or not _answered_with_problems(request):
            return response
        if response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE):
            return response
        return _as_problem(request, response)


def _answered_with_problems(request: HttpRequest) -> bool:
    """Everything but the probes and the admin's pages on the public host."""
    if request.path in PROBE_PATHS:
        return False
    tenant = getattr(request, "tenant", None)  # absent: resolution never ran (bad Host)
    return not (tenant is not None and tenant.is_public and request.path.startswith(ADMIN_PREFIX))


def _as_problem(request: HttpRequest, response: HttpResponseBase) -> HttpResponse:
    status = response.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if status == 404:
        detail = f"Nothing is served at {request.path!r}."
    elif status >= 500:
        detail = "The error has been logged."
    else:
        detail = "The request cannot be served as sent."
    problem = problem_response(status, title, detail)
    for name, value in response.items():
        if name.lower() not in BODY_HEADERS:
            problem[name] = value
    return problem
