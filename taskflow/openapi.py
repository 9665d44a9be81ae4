"""The TaskFlow API's description: query parameters declared once, shapes from the models.

A view names the query parameters each method accepts in `query_parameters` (tuples of
`QueryParam`); the OpenAPI generation (control_plane.http.openapi) describes them from that
declaration and `DeclaredQuery` refuses any other parameter with a 400 problem naming the
allowed ones, so the description and the check cannot drift. Response shapes are serializers
derived from the columns the models declare SHOWN, like the representations themselves.

This module describes; it never changes what a view does with a request it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

import sqlalchemy as sa
from django.http import QueryDict
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request

from taskflow.api_versions import CATALOG, VERSION_HEADER
from taskflow.errors import InvalidInput
from taskflow.models import MAX_ID, SHOWN, Comment, Project, Task, TaskStatus, columns_with
from taskflow.pagination import DEFAULT_LIMIT, MAX_LIMIT
from taskflow.selectors import COMMENT_SORTS, PROJECT_SORTS, TASK_SORTS
from taskflow.serializers import MAX_TEXT, StrictSerializer
from taskflow.serializers import NOT_BLANK as NOT_BLANK  # the control plane's too
from taskflow.serializers import refuse_longer_than_described as refuse_longer_than_described
from tenants.problems import PROBLEM_CONTENT_TYPE, Problem

# How the tenant API's document names itself: its info.version is the newest API version, so a
# committed document says which version it describes.
SCHEMA_SETTINGS: dict[str, Any] = {"TITLE": "TaskFlow API", "VERSION": CATALOG.latest.name}

# --- Query parameters, declared once ------------------------------------------------------------


@dataclass(frozen=True)
class QueryParam:
    """One query parameter a view accepts: its name and the JSON schema of its value.

    `items` makes it a comma-separated list (`style: form, explode: false`) of those values.
    """

    name: str
    description: str
    type: str = "string"
    format: str | None = None
    enum: tuple[str, ...] | None = None
    items: tuple[str, ...] | None = None
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    # Older spellings the server still accepts for an enum, left out of the description.
    aliases: tuple[str, ...] = ()
    # Set: `pattern` is enforced here, a value it refuses a 400 with this message.
    pattern_message: str | None = None

    def schema(self) -> dict[str, Any]:
        if self.items is not None:
            return {
                "type": "array",
                "items": {"type": "string", "enum": list(self.items)},
            }
        schema: dict[str, Any] = {"type": self.type}
        for key, value in (
            ("format", self.format),
            ("enum", list(self.enum) if self.enum else None),
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("maxLength", self.max_length),
            ("pattern", self.pattern),
            ("default", self.default),
        ):
            if value is not None:
                schema[key] = value
        return schema

    def parameter(self) -> OpenApiParameter:
        lists = self.items is not None
        return OpenApiParameter(
            self.name,
            self.schema(),
            OpenApiParameter.QUERY,
            description=self.description,
            style="form" if lists else None,
            explode=False if lists else None,
        )


Query = tuple[QueryParam, ...]

# A due bound (taskflow.filters): a date, or a date-time with its offset; or nothing. Years
# 0001-9999 and each month's own days; February 29th of a common year is the one calendar rule
# left to the server (a 422, taskflow.filters.parse_moment).
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-9]))"
)
_DAY = rf"{_YEAR}-{_MONTH_DAY}"
DUE_BOUND_PATTERN = (
    rf"^{_DAY}(?:[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))?$"
)
DUE_BOUND_MESSAGE = (
    "{name} must be a date such as 2026-11-30 or a time with its offset such as "
    "2026-11-30T09:00:00Z."
)

# A text that may be anything but NUL, which no query string may carry (a 400 on every path).
NO_NUL_TEXT = r"^[^\x00]*$"


def sort_pattern(fields: Mapping[str, Any]) -> str:
    """The grammar pagination.parse_sort accepts, as a pattern: fields joined by commas, each
    optionally descending (`-`) and named once (a lookahead refuses a repeated name), `id` or
    `-id` only as the last key; or nothing (the default sort)."""
    key = f"-?(?:{'|'.join(re.escape(name) for name in fields)})"
    keys = f"(?:{key}(?:,{key})*(?:,-?id)?|-?id)"
    once = r"(?!(?:[^,]*,)*-?([a-z_]+),(?:[^,]*,)*-?\1(?:,|$))"
    return f"^(?:{once}{keys})?$"


def sort_param(fields: Mapping[str, Any], default: str) -> QueryParam:
    return QueryParam(
        "sort",
        "Sort keys, comma-separated, each ascending or descending (`-`); `id` is always the "
        f"last key, in the last key's direction; a field appears once. Default `{default}`.",
        pattern=sort_pattern(fields),
    )


# What pagination.encode_cursor writes: the payload and a 16-byte HMAC, base64url without padding.
# Empty is the same as none (the first page).
CURSOR_PATTERN = r"^([A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22})?$"
CURSOR = QueryParam(
    "cursor",
    "Opaque and signed by the server: take it from the `next` or `previous` link of a page of "
    "the same list, sort and filters, never build one. A value the server did not sign for "
    "this list is a 400 problem titled `Invalid cursor`.",
    pattern=CURSOR_PATTERN,
)
LIMIT = QueryParam(
    "limit",
    "Items per page.",
    type="integer",
    default=DEFAULT_LIMIT,
    minimum=1,
    maximum=MAX_LIMIT,
)
INCLUDE_DELETED = QueryParam(
    "include_deleted",
    "Also soft-deleted rows (admins only).",
    type="boolean",
    default=False,
)
PAGE: Query = (CURSOR, LIMIT)
TASK_STATUSES = tuple(s.value for s in TaskStatus)  # named TaskStatusEnum in the documents
TASK_FILTER_QUERY: Query = (
    QueryParam(
        "status",
        "Only tasks in these statuses, comma-separated.",
        items=TASK_STATUSES,
    ),
    QueryParam(
        "project",
        "Only tasks of this project.",
        type="integer",
        format="int64",
        minimum=1,
        maximum=MAX_ID,
    ),
    QueryParam(
        "assignee",
        "Only tasks of this assignee.",
        type="integer",
        format="int64",
        minimum=1,
        maximum=MAX_ID,
    ),
    QueryParam(
        "due_before",
        "Only tasks due before this time (`due_at` <), an RFC 3339 date-time with its offset; "
        "a date (YYYY-MM-DD) means before that UTC day begins.",
        pattern=DUE_BOUND_PATTERN,
        pattern_message=DUE_BOUND_MESSAGE,
    ),
    QueryParam(
        "due_after",
        "Only tasks due after this time (`due_at` >), an RFC 3339 date-time with its offset; "
        "a date (YYYY-MM-DD) means after that UTC day ends.",
        pattern=DUE_BOUND_PATTERN,
        pattern_message=DUE_BOUND_MESSAGE,
    ),
    QueryParam(
        "q", "Only tasks whose title contains this text.", max_length=200, pattern=NO_NUL_TEXT
    ),
)
PROJECT_LIST_QUERY: Query = (sort_param(PROJECT_SORTS, "created_at"), *PAGE, INCLUDE_DELETED)
TASK_LIST_QUERY: Query = (
    sort_param(TASK_SORTS, "created_at"),
    *PAGE,
    INCLUDE_DELETED,
    *TASK_FILTER_QUERY,
)
COMMENT_LIST_QUERY: Query = (sort_param(COMMENT_SORTS, "created_at"), *PAGE)
HISTORY_LIST_QUERY: Query = PAGE
DETAIL_QUERY: Query = (INCLUDE_DELETED,)


class UnknownQueryParameter(Problem):
    status = 400
    title = "Invalid input"

    def __init__(self, unknown: list[str], allowed: list[str]) -> None:
        hint = f"allowed: {', '.join(allowed)}." if allowed else "this operation takes none."
        super().__init__(
            "The request has invalid fields.",
            errors=[
                {"field": name, "message": f"Unknown query parameter; {hint}"} for name in unknown
            ],
            allowed_query_parameters=allowed,
        )


def check_query(params: QueryDict, declared: Query) -> None:
    """Refuse a query parameter the operation does not declare (a typo is not a no-op)."""
    if not params:
        return
    allowed = [param.name for param in declared]
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        raise UnknownQueryParameter(unknown, allowed)
    for param in declared:
        if param.name in params:  # getlist raises and catches a KeyError inside on a miss
            for value in params.getlist(param.name):
                check_value(param, value)


# Spellings of a boolean query value; anything else is a 400, not a silent false.
BOOLEAN_VALUES = frozenset({"true", "false", "1", "0"})


FULL_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def check_value(param: QueryParam, value: str) -> None:
    """Refuse a value its declaration rules out: a boolean that is neither true nor false, a
    value outside its enum, a date that is not YYYY-MM-DD (nor empty), an empty integer, a text
    over its length. (Integers and lists are parsed, with their own errors, where they are used.)"""
    name = param.name
    if param.type == "integer" and not value:
        raise InvalidInput(name, f"{name} must be an integer.")
    if param.type == "boolean" and value not in BOOLEAN_VALUES:
        raise InvalidInput(name, f"{name} must be true or false.")
    if param.enum is not None and value not in param.enum and value not in param.aliases:
        raise InvalidInput(name, f"{name} must be one of {', '.join(param.enum)}.")
    if param.format == "date" and not _is_full_date(value):
        raise InvalidInput(name, f"{name} must be a date such as 2026-11-30.")
    if param.max_length is not None and len(value) > param.max_length:
        raise InvalidInput(name, f"{name} is at most {param.max_length} characters.")
    if param.pattern_message and param.pattern and not re.match(param.pattern, value):
        raise InvalidInput(name, param.pattern_message.format(name=name))


def _is_full_date(value: str) -> bool:
    """RFC 3339's full-date (what `format: date` means), a real day of the calendar."""
    if not FULL_DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


class DeclaredQuery:
    """A view whose methods accept only the query parameters they declare.

    `query_parameters = {"get": TASK_LIST_QUERY}`; a method not named accepts none (HEAD is GET).
    """

    query_parameters: ClassVar[Mapping[str, Query]] = {}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        method = (request.method or "").lower()
        if method == "options":
            return
        check_query(
            request.query_params,
            self.query_parameters.get(method if method != "head" else "get", ()),
        )


# --- Shapes --------------------------------------------------------------------------------------


def _output_field(column: sa.Column[Any]) -> serializers.Field[Any, Any, Any, Any]:
    options: dict[str, Any] = {"allow_null": True} if column.nullable else {}
    kind, info = column.type, column.info
    if "choices" in info:
        return serializers.ChoiceField(choices=list(info["choices"]), **options)
    if isinstance(kind, sa.BigInteger):
        return serializers.IntegerField(min_value=1, max_value=MAX_ID, **options)
    if isinstance(kind, sa.Integer):
        bounds = {"min_value": info["min"]} if "min" in info else {}
        if "max" in info:
            bounds["max_value"] = info["max"]
        return serializers.IntegerField(**bounds, **options)
    if isinstance(kind, sa.DateTime):
        return serializers.DateTimeField(**options)
    if isinstance(kind, sa.Date):
        return serializers.DateField(**options)
    if isinstance(kind, sa.String):
        return serializers.CharField(max_length=kind.length or MAX_TEXT, **options)
    raise TypeError(f"no output rule for {column.name} ({kind})")


def representation_serializer(name: str, entity: Any) -> type[serializers.Serializer[Any]]:
    """The shape of a representation (taskflow.representations): the SHOWN columns, all present."""
    table = entity.__table__
    fields = {column: _output_field(table.c[column]) for column in columns_with(entity, SHOWN)}
    return type(name, (serializers.Serializer,), fields)


ProjectShape = representation_serializer("Project", Project)
TaskShape = representation_serializer("Task", Task)
CommentShape = representation_serializer("Comment", Comment)


class HistoryEntryShape(serializers.Serializer[Any]):
    id = serializers.IntegerField(max_value=MAX_ID)
    operation = serializers.ChoiceField(
        choices=["insert", "update", "soft_delete", "restore", "delete"]
    )  # what the history triggers write (migrations_sqla)
    version = serializers.IntegerField(allow_null=True)
    changes = serializers.DictField(
        child=serializers.ListField(child=serializers.JSONField(), min_length=2, max_length=2),
        help_text="Each changed column as `[old, new]` (`old` is null for an insert).",
    )
    actor_id = serializers.IntegerField(allow_null=True, max_value=MAX_ID)
    request_id = serializers.CharField(allow_null=True, max_length=64)
    at = serializers.DateTimeField()

    class Meta:
        ref_name = "HistoryEntry"


def page_of(item: type[serializers.Serializer[Any]], name: str) -> serializers.Serializer[Any]:
    """The envelope of a keyset page of `item`."""
    return inline_serializer(
        name=name,
        fields={
            "results": item(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null."),
            "previous": serializers.URLField(
                allow_null=True, help_text="The previous page, or null."
            ),
        },
    )


class ClosedInput(OpenApiSerializerExtension):
    """A StrictSerializer refuses fields it does not know: `additionalProperties: false`."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


# --- Problems (RFC 9457) -------------------------------------------------------------------------


class FieldErrorShape(serializers.Serializer[Any]):
    field = serializers.CharField(help_text="The field, query parameter or header at fault.")
    message = serializers.CharField()

    class Meta:
        ref_name = "FieldError"


class ProblemShape(serializers.Serializer[Any]):
    """An RFC 9457 problem with this API's extension members."""

    type = serializers.CharField(default="about:blank")
    title = serializers.CharField()
    status = serializers.IntegerField(min_value=400, max_value=599)
    detail = serializers.CharField(required=False)
    # The serializer's metaclass takes declared fields off the class: `.errors` stays DRF's.
    errors = FieldErrorShape(  # type: ignore[assignment]
        many=True,
        required=False,
        help_text="Each invalid field (400, 422), or the field a 409 asks for.",
    )
    current_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="The row's version now (409, 412)."
    )
    current = serializers.DictField(
        required=False, help_text="The row's current representation (409, 412)."
    )
    known_versions = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="On an unknown API version (400)."
    )
    allowed_query_parameters = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="On an unknown query parameter (400).",
    )
    tenant_status = serializers.CharField(required=False, help_text="On 403/503 of a tenant.")

    class Meta:
        ref_name = "Problem"


PROBLEM_DESCRIPTIONS = {
    400: "Invalid input: `errors` names each field; an unknown query parameter lists "
    "`allowed_query_parameters`; an unknown `TaskFlow-Version` (tenant API) lists "
    "`known_versions`.",
    401: "No token, or not a valid one.",
    403: "The token's role does not allow this, or the tenant is suspended.",
    404: "No such resource (or not in this tenant).",
    409: "Conflicts with the resource's state; a TaskFlow write that lost to another carries "
    "`current_version` and `current`, the row as it is now.",
    412: "`If-Match` names an older version: `current_version` and `current` are the row now.",
    410: "Gone: the import's files were removed past their retention.",
    413: "The upload is larger than the limit.",
    422: "Well-formed, but refused by a rule or by what it refers to (a `project_id` of no live "
    "project, a CSV without a valid header row, a reserved slug, an unknown revision): `errors` "
    "names each field. Before API version 2026-12-01 the tenant API answered these with 400.",
    415: "The request body's media type is not accepted.",
    428: "The write needs `If-Match` (or a `version` in the body).",
    429: "A rate limit is spent (the tenant's or the token's for this class of request, or "
    "failed authentications from this address): retry after `Retry-After` seconds; `limit` "
    "names it.",
    503: "Not available right now (the tenant is being provisioned or moved, or the request's "
    "transaction lost a lock conflict with a concurrent change and wrote nothing); retry after "
    "`Retry-After` seconds.",
}


def problems(*statuses: int) -> dict[Any, OpenApiResponse]:
    """problem+json responses for these statuses."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            ProblemShape, description=PROBLEM_DESCRIPTIONS[status]
        )
        for status in statuses
    }


# --- Headers -------------------------------------------------------------------------------------

ETAG_HEADER = OpenApiParameter(
    "ETag",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200, 201],
    description='The representation\'s version, quoted (`"3"`): send it back as `If-Match`.',
)
LOCATION_HEADER = OpenApiParameter(
    "Location",
    {"type": "string", "format": "uri-reference"},
    OpenApiParameter.HEADER,
    response=[201, 202],
    description="Where the new resource (or job) is: a path on this host.",
)
IF_MATCH_HEADER = OpenApiParameter(
    "If-Match",
    {"type": "string", "pattern": r'^(\*|(W/)?"?[0-9]{1,18}"?)$'},  # views.ETAG
    OpenApiParameter.HEADER,
    description='The version the write expects (an ETag such as `"3"`, or `*`); a stale one is '
    "a 412 with the current representation.",
)
VERSION_REQUEST_HEADER = OpenApiParameter(
    VERSION_HEADER,
    {"type": "string", "enum": list(CATALOG.names)},
    OpenApiParameter.HEADER,
    description="Serve this request at this API version instead of the tenant's pinned one.",
)
VERSION_RESPONSE_HEADERS = [
    OpenApiParameter(
        VERSION_HEADER,
        {"type": "string", "enum": list(CATALOG.names)},
        OpenApiParameter.HEADER,
        response=True,
        description="The API version this response was served at.",
    ),
    OpenApiParameter(
        "Deprecation",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="On a deprecated version only: `@<unix time>` it was deprecated (RFC 9745).",
    ),
    OpenApiParameter(
        "Sunset",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="On a deprecated version with an end date: when it stops (RFC 8594).",
    ),
    OpenApiParameter(
        "Link",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="On a deprecated version: its changelog entry (`rel=deprecation`, `sunset`).",
    ),
]
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429, 503],
    description="Seconds to wait before retrying.",
)
RATE_LIMIT = OpenApiParameter(
    "RateLimit",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=True,
    description="The limit closest to refusing (draft-ietf-httpapi-ratelimit-headers): "
    '`"token-reads";r=17;t=42` (requests remaining, seconds until whole again).',
)
RATE_LIMIT_POLICY = OpenApiParameter(
    "RateLimit-Policy",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=True,
    description='Every limit the request falls under: `"tenant-reads";q=1800;w=60` (quota per '
    "window of w seconds).",
)

# Every response on every host carries its request id (control_plane.observability): the
# caller's X-Request-ID when well-formed, else a new one. A malformed one is replaced, not
# refused, so the request header is any string.
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # tenants.binding.REQUEST_ID
REQUEST_ID = OpenApiParameter(
    REQUEST_ID_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="An id for this request, echoed on the response and carried into the jobs it "
    "starts and their log lines: 1-64 letters, digits, `.`, `_` or `-`; anything else is "
    "replaced by a new id.",
)
REQUEST_ID_RESPONSE = OpenApiParameter(
    REQUEST_ID_HEADER,
    {"type": "string", "pattern": REQUEST_ID_PATTERN},
    OpenApiParameter.HEADER,
    response=True,
    required=True,
    description="This request's id: the one the request sent when well-formed, else a new one.",
)
# Response headers every response of every API version carries, whoever answers it (the
# observation layer sets them before a version is negotiated, a 429 or a 404 included). Declared
# once: the generator adds them to every operation, and control_plane.http.contract adds them to
# every kept version's document, written before they were declared.
EVERY_VERSION_HEADERS: tuple[OpenApiParameter, ...] = (REQUEST_ID_RESPONSE,)


def query_parameters_of(view: Any, method: str) -> list[OpenApiParameter]:
    """The declared query parameters of a view's method, as OpenAPI parameters."""
    declared: Mapping[str, Query] = getattr(view, "query_parameters", {})
    return [param.parameter() for param in declared.get(method.lower(), ())]


# --- Links: the stateful flow create -> get -> patch (with the ETag) -> delete -> restore ---------

LINKED = {"Project": "project_id", "Task": "task_id"}


def _links(resource: str, id_name: str, id_from: str, targets: tuple[str, ...]) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for target in targets:
        parameters = {f"path.{id_name}": id_from}
        if target in {"update", "delete"} and id_from.startswith("$response"):
            parameters["header.If-Match"] = "$response.header.ETag"
        links[f"{target.capitalize()}{resource}"] = {
            "operationId": f"{target}{resource}",
            "parameters": parameters,
        }
    return links


def add_links(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: OpenAPI links between a resource's operations."""
    operations = {
        operation.get("operationId"): operation
        for methods in result.get("paths", {}).values()
        for operation in methods.values()
        if isinstance(operation, dict)
    }
    for resource, id_name in LINKED.items():
        from_body, from_path = "$response.body#/id", f"$request.path.{id_name}"
        flow = {
            ("create", "201"): (from_body, ("get", "update", "delete")),
            ("get", "200"): (from_body, ("update", "delete")),
            ("update", "200"): (from_body, ("get", "delete")),
            ("delete", "204"): (from_path, ("restore",)),
            ("restore", "200"): (from_body, ("get", "update", "delete")),
        }
        for (source, status), (id_from, targets) in flow.items():
            operation = operations.get(f"{source}{resource}")
            if operation is None or status not in operation.get("responses", {}):
                continue
            operation["responses"][status]["links"] = _links(resource, id_name, id_from, targets)
    return result


def shared_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: a response header every operation repeats is
    declared once under components/headers and referenced."""
    shared = {
        param.name: param
        for param in (
            *VERSION_RESPONSE_HEADERS,
            RETRY_AFTER,
            RATE_LIMIT,
            RATE_LIMIT_POLICY,
            *EVERY_VERSION_HEADERS,
        )
    }
    components: dict[str, Any] = {}
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                for name, header in response.get("headers", {}).items():
                    if name in shared and "$ref" not in header:
                        components.setdefault(name, header)
                        response["headers"][name] = {"$ref": f"#/components/headers/{name}"}
    if components:
        result.setdefault("components", {})["headers"] = dict(sorted(components.items()))
    return result
