"""The edge of the TaskFlow API where dated versions are negotiated and older shapes are served.

A request to /api/ on a tenant host is served at the version named by its `TaskFlow-Version`
header, else at the version its tenant is pinned to. An unknown version is a 400 problem that
lists the known ones. For a client at an older version the middleware upgrades the query and
JSON body before the view runs and downgrades the response's data before it is rendered, so views,
services and selectors see only the newest shape. Every response names the version it was served
at; a deprecated version adds `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to its
changelog entry.

It never touches the public host's pages, and it never re-parses a rendered response: it changes
DRF's `response.data` before rendering.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, time
from email.utils import format_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import orjson
from django.http import HttpRequest, HttpResponse, QueryDict

from taskflow import api_versions, due
from taskflow.api_versions import VERSION_HEADER, ApiVersion, Change
from tenants.problems import problem_response

# The version header as WSGI names it in request.META.
VERSION_META = "HTTP_" + VERSION_HEADER.upper().replace("-", "_")

API_PREFIX = "/api/"
CHANGELOG_PATH = "/api/v1/changelog"


def api_version_of(request: HttpRequest) -> ApiVersion:
    """The version this request is served at (the newest outside the API)."""
    version: ApiVersion | None = getattr(request, "api_version", None)
    return version or api_versions.CATALOG.latest


class ApiVersionMiddleware:
    """Negotiates the version and serves older ones by transformation. Place after tenant resolution."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.is_public or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        due.report_served()
        catalog = api_versions.CATALOG
        asked = request.META.get(VERSION_META)  # headers.get raises inside when it is absent
        if asked is not None:
            version = catalog.get(asked.strip())
            if version is None:
                return problem_response(
                    400,
                    "Unknown API version",
                    f"{VERSION_HEADER} {asked.strip()[:40]!r} is not a version of this API; "
                    f"known versions: {', '.join(catalog.names)}.",
                    known_versions=list(catalog.names),
                )
        else:
            version = catalog.pinned(getattr(tenant, "api_version", "") or "")
        request.api_version = version  # type: ignore[attr-defined]
        request.api_changes = catalog.changes_after(version)  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[VERSION_HEADER] = version.name
        if version.deprecated_on is not None:
            _mark_deprecated(request, response, version)
        return response

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        changes: tuple[Change, ...] = getattr(request, "api_changes", ())
        resource = _resource(request)
        if not changes or resource is None:
            return
        if request.GET:
            query = {key: request.GET.getlist(key) for key in request.GET}
            upgraded = api_versions.upgrade_query(changes, resource, query)
            if upgraded != query:
                request.GET = _query_dict(upgraded)  # type: ignore[assignment]
        if request.content_type == "application/json" and request.body:
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                return  # the view's parser answers with its 400
            if isinstance(body, dict):
                _replace_body(request, api_versions.upgrade_request(changes, resource, body))

    def process_template_response(self, request: HttpRequest, response: Any) -> Any:
        changes: tuple[Change, ...] = getattr(request, "api_changes", ())
        data = getattr(response, "data", None)
        resource = _resource(request)
        if not changes or resource is None or not isinstance(data, dict):
            return response
        if response.status_code >= 400:
            old_status = api_versions.downgrade_status(changes, resource, response.status_code)
            if old_status != response.status_code:
                response.status_code = old_status
                if data.get("status") is not None:
                    data["status"] = old_status
        shaped = getattr(response, SHAPED, False)
        response.data = _downgrade(changes, resource, data, response.status_code, shaped)
        return response


def row_shape(request: HttpRequest, fields: tuple[str, ...]) -> api_versions.RowShape | None:
    """How a page's rows of `fields` are built as items at this request's version, once each
    (None: in the newest shape, then downgraded here before rendering). A view that builds its
    items so marks its response (`mark_shaped`), and they are not downgraded again."""
    changes: tuple[Change, ...] = getattr(request, "api_changes", ())
    resource = _resource(request)
    if not changes or resource is None:
        return api_versions.row_shape((), "", fields)
    return api_versions.row_shape(changes, resource, fields)


ShapedResponse = TypeVar("ShapedResponse", bound=HttpResponse)
SHAPED = "taskflow_items_shaped"  # a page response whose items are in its version's shape


def mark_shaped(response: ShapedResponse) -> ShapedResponse:
    setattr(response, SHAPED, True)
    return response


def _resource(request: HttpRequest) -> str | None:
    match = request.resolver_match
    return api_versions.ROUTE_RESOURCES.get(match.url_name or "") if match else None


def _downgrade(
    changes: tuple[Change, ...], resource: str, data: dict[str, Any], status: int, shaped: bool
) -> dict[str, Any]:
    if isinstance(data.get("results"), list):
        downgrade = None if shaped else api_versions.item_downgrader(changes, resource)
        if downgrade is not None:  # chosen once per page
            data["results"] = [downgrade(item) for item in data["results"]]
        for link in ("next", "previous"):
            if isinstance(data.get(link), str):
                data[link] = _downgraded_link(changes, resource, data[link])
    elif status >= 400:
        if isinstance(data.get("current"), dict):  # a 409/412 carries the current representation
            data["current"] = api_versions.downgrade_item(changes, resource, data["current"])
        data = api_versions.downgrade_problem(changes, resource, data)
    else:
        data = api_versions.downgrade_item(changes, resource, data)
    return data


def _downgraded_link(changes: tuple[Change, ...], resource: str, url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    query = api_versions.downgrade_query(changes, resource, query)
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def _query_dict(query: dict[str, list[str]]) -> QueryDict:
    result = QueryDict(mutable=True)
    for key, values in query.items():
        result.setlist(key, values)
    result._mutable = False
    return result


def _replace_body(request: HttpRequest, body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    request._body = raw
    request._stream = io.BytesIO(raw)
    request.META["CONTENT_LENGTH"] = str(len(raw))


def _mark_deprecated(request: HttpRequest, response: HttpResponse, version: ApiVersion) -> None:
    assert version.deprecated_on is not None
    deprecated_at = datetime.combine(version.deprecated_on, time(), tzinfo=UTC)
    response["Deprecation"] = f"@{int(deprecated_at.timestamp())}"
    links = [
        f'<{request.build_absolute_uri(CHANGELOG_PATH)}#v{version.name}>; rel="deprecation"; '
        'type="text/markdown"'
    ]
    if version.sunset_on is not None:
        sunset_at = datetime.combine(version.sunset_on, time(), tzinfo=UTC)
        response["Sunset"] = format_datetime(sunset_at, usegmt=True)
        links.append(
            f'<{request.build_absolute_uri(CHANGELOG_PATH)}#v{version.name}>; rel="sunset"'
        )
    response["Link"] = ", ".join(links)


def changelog(request: HttpRequest) -> HttpResponse:
    """The API's changelog, generated from the version declarations (no token needed)."""
    return HttpResponse(
        api_versions.CATALOG.changelog(), content_type="text/markdown; charset=utf-8"
    )
