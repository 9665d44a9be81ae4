"""The TaskFlow REST API: thin views that parse, call one service or selector, and render."""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from taskflow import openapi, selectors, services, versioning
from taskflow.errors import InvalidInput
from taskflow.filters import task_filters
from taskflow.openapi import (
    ETAG_HEADER,
    IF_MATCH_HEADER,
    LOCATION_HEADER,
    DeclaredQuery,
    page_of,
    problems,
)
from taskflow.pagination import Page, parse_limit
from taskflow.permissions import TenantRole
from taskflow.representations import (
    COMMENT_FIELDS,
    PROJECT_FIELDS,
    TASK_FIELDS,
    comment_repr,
    history_repr,
    project_repr,
    task_repr,
)
from taskflow.serializers import (
    CommentCreate,
    ProjectCreate,
    ProjectPatch,
    TaskCreate,
    TaskPatch,
    VersionOnly,
)
from tenants.binding import bound_reads, bound_session
from tenants.identity import Role, principal_of

ETAG = re.compile(r'^(?:W/)?"?([0-9]{1,18})"?$')  # a version: an integer column


class TaskflowView(DeclaredQuery, APIView):
    """A TaskFlow resource: a tenant's members by role; `bound_session` for its one transaction."""

    permission_classes = (IsAuthenticated, TenantRole)

    @property
    def tenant_id(self) -> int:
        return principal_of(self.request).tenant_id

    @functools.cached_property
    def query(self) -> dict[str, str]:
        """The query parameters, each its last value, as a plain dict: a QueryDict's get raises
        and catches a KeyError inside for every parameter it does not hold, and a list request
        looks up more absent parameters than present ones."""
        return self.request.query_params.dict()

    def list_query(self) -> selectors.ListQuery:
        params = self.query
        return selectors.ListQuery(
            sort=params.get("sort"),
            cursor=params.get("cursor") or None,
            limit=parse_limit(params.get("limit")),
            include_deleted=params.get("include_deleted") in {"1", "true"},
        )

    def page_response(self, page: Page[Any], results: list[dict[str, Any]]) -> Response:
        """The page's response: `results` its items as built from `page.items`, and its links."""
        links = self._links_to() if page.next_cursor or page.previous_cursor else ""
        return Response(
            {
                "results": results,
                "next": None if page.next_cursor is None else links + page.next_cursor,
                "previous": None if page.previous_cursor is None else links + page.previous_cursor,
            }
        )

    def rows_page_response(self, page: Page[Any], fields: tuple[str, ...]) -> Response:
        """A page of rows of `fields` columns (a representation's, in order), each item built
        once in the shape of the request's version (taskflow.versioning.row_shape)."""
        shape = versioning.row_shape(self.request, fields)
        if shape is None:
            return self.page_response(
                page, [dict(zip(fields, row, strict=True)) for row in page.items]
            )
        return versioning.mark_shaped(self.page_response(page, shape.items(page.items)))

    def _links_to(self) -> str:
        """A page link up to its cursor: this request's URL, its other parameters kept, and
        `cursor=` last. A cursor is URL-safe base64 and a dot (taskflow.pagination), which
        neither urlencode nor build_absolute_uri would change: it is appended as it is, so the
        URL is built once per page rather than once per link."""
        params = urlencode([(k, v) for k, v in self.query.items() if k != "cursor"])
        query = f"{params}&cursor=" if params else "cursor="
        return self.request.build_absolute_uri(f"{self.request.path}?{query}")

    def precondition(self, body: dict[str, Any] | None = None) -> services.Precondition:
        header = self.request.headers.get("If-Match")
        if header is not None:
            if header.strip() == "*":
                return services.Precondition(if_match_any=True)
            match = ETAG.match(header.strip())
            if not match:
                raise InvalidInput("If-Match", 'If-Match must be an ETag such as "3".')
            return services.Precondition(if_match=int(match.group(1)))
        return services.Precondition(body_version=(body or {}).get("version"))


def parsed(serializer_class: Any, data: Any, *, partial: bool = False) -> dict[str, Any]:
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def with_etag(body: dict[str, Any], status: int = 200) -> Response:
    return Response(body, status=status, headers={"ETag": f'"{body["version"]}"'})


# --- Projects -----------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        operation_id="listProjects",
        summary="List projects, a keyset page at a time",
        responses={200: page_of(openapi.ProjectShape, "ProjectPage")},
    ),
    post=extend_schema(
        operation_id="createProject",
        summary="Create a project",
        request=ProjectCreate,
        parameters=[ETAG_HEADER, LOCATION_HEADER],
        responses={201: openapi.ProjectShape, **problems(409)},
    ),
)
class ProjectCollection(TaskflowView):
    query_parameters = {"get": openapi.PROJECT_LIST_QUERY}

    def get(self, request: Request) -> Response:
        with bound_reads(request) as connection:
            page = selectors.project_list(
                session=connection, tenant_id=self.tenant_id, query=self.list_query()
            )
            return self.rows_page_response(page, PROJECT_FIELDS)

    def post(self, request: Request) -> Response:
        data = parsed(ProjectCreate, request.data)
        with bound_session(request) as session:
            project = services.project_create(session=session, tenant_id=self.tenant_id, data=data)
            body = project_repr(project)
        response = with_etag(body, 201)
        response["Location"] = f"/api/v1/projects/{body['id']}"
        return response


@extend_schema_view(
    get=extend_schema(
        operation_id="getProject",
        summary="Read a project",
        parameters=[ETAG_HEADER],
        responses={200: openapi.ProjectShape},
    ),
    patch=extend_schema(
        operation_id="updateProject",
        summary="Change a project's fields (If-Match or `version` guards against lost updates)",
        request=ProjectPatch,
        parameters=[IF_MATCH_HEADER, ETAG_HEADER],
        responses={200: openapi.ProjectShape, **problems(409, 412, 428)},
    ),
    delete=extend_schema(
        operation_id="deleteProject",
        summary="Soft-delete a project (If-Match or `version` required)",
        parameters=[IF_MATCH_HEADER],
        responses={204: OpenApiResponse(description="Deleted."), **problems(409, 412, 428)},
    ),
)
class ProjectDetail(TaskflowView):
    query_parameters = {"get": openapi.DETAIL_QUERY}

    def get(self, request: Request, project_id: int) -> Response:
        with bound_session(request) as session:
            project = selectors.project_get(
                session=session, tenant_id=self.tenant_id, project_id=project_id,
                include_deleted=self.list_query().include_deleted,
            )  # fmt: skip
            return with_etag(project_repr(project))

    def patch(self, request: Request, project_id: int) -> Response:
        data = parsed(ProjectPatch, request.data)
        precondition = self.precondition(data)
        data.pop("version", None)
        with bound_session(request) as session:
            project = services.project_update(
                session=session, tenant_id=self.tenant_id, project_id=project_id,
                precondition=precondition, changes=data,
            )  # fmt: skip
            return with_etag(project_repr(project))

    def delete(self, request: Request, project_id: int) -> Response:
        precondition = self.precondition(parsed(VersionOnly, request.data or {}))
        with bound_session(request) as session:
            services.project_delete(
                session=session,
                tenant_id=self.tenant_id,
                project_id=project_id,
                precondition=precondition,
            )
        return Response(status=204)


@extend_schema_view(
    post=extend_schema(
        operation_id="restoreProject",
        summary="Restore a soft-deleted project (admins; If-Match optional, never 428)",
        request=None,
        parameters=[IF_MATCH_HEADER, ETAG_HEADER],
        responses={200: openapi.ProjectShape, **problems(409, 412)},
    ),
)
class ProjectRestore(TaskflowView):
    required_roles = {"POST": Role.ADMIN}

    def post(self, request: Request, project_id: int) -> Response:
        precondition = self.precondition(parsed(VersionOnly, request.data or {}))
        with bound_session(request) as session:
            project = services.project_restore(
                session=session, tenant_id=self.tenant_id, project_id=project_id,
                precondition=precondition,
            )  # fmt: skip
            return with_etag(project_repr(project))


# --- Tasks --------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        operation_id="listTasks",
        summary="List tasks, a keyset page at a time",
        responses={200: page_of(openapi.TaskShape, "TaskPage")},
    ),
    post=extend_schema(
        operation_id="createTask",
        summary="Create a task",
        request=TaskCreate,
        parameters=[ETAG_HEADER, LOCATION_HEADER],
        responses={201: openapi.TaskShape, **problems(409, 422)},
    ),
)
class TaskCollection(TaskflowView):
    query_parameters = {"get": openapi.TASK_LIST_QUERY}

    def get(self, request: Request) -> Response:
        filters = task_filters(self.query)
        with bound_reads(request) as connection:
            page = selectors.task_list(
                session=connection,
                tenant_id=self.tenant_id,
                filters=filters,
                query=self.list_query(),
            )
            return self.rows_page_response(page, TASK_FIELDS)

    def post(self, request: Request) -> Response:
        data = parsed(TaskCreate, request.data)
        with bound_session(request) as session:
            task = services.task_create(session=session, tenant_id=self.tenant_id, data=data)
            body = task_repr(task)
        response = with_etag(body, 201)
        response["Location"] = f"/api/v1/tasks/{body['id']}"
        return response


@extend_schema_view(
    get=extend_schema(
        operation_id="getTask",
        summary="Read a task",
        parameters=[ETAG_HEADER],
        responses={200: openapi.TaskShape},
    ),
    patch=extend_schema(
        operation_id="updateTask",
        summary="Change a task's fields (If-Match or `version` guards against lost updates)",
        request=TaskPatch,
        parameters=[IF_MATCH_HEADER, ETAG_HEADER],
        responses={200: openapi.TaskShape, **problems(409, 412, 422, 428)},
    ),
    delete=extend_schema(
        operation_id="deleteTask",
        summary="Soft-delete a task (If-Match or `version` required)",
        parameters=[IF_MATCH_HEADER],
        responses={204: OpenApiResponse(description="Deleted."), **problems(409, 412, 428)},
    ),
)
class TaskDetail(TaskflowView):
    query_parameters = {"get": openapi.DETAIL_QUERY}

    def get(self, request: Request, task_id: int) -> Response:
        with bound_session(request) as session:
            task = selectors.task_get(
                session=session, tenant_id=self.tenant_id, task_id=task_id,
                include_deleted=self.list_query().include_deleted,
            )  # fmt: skip
            return with_etag(task_repr(task))

    def patch(self, request: Request, task_id: int) -> Response:
        data = parsed(TaskPatch, request.data)
        precondition = self.precondition(data)
        data.pop("version", None)
        with bound_session(request) as session:
            task = services.task_update(
                session=session,
                tenant_id=self.tenant_id,
                task_id=task_id,
                precondition=precondition,
                changes=data,
            )
            return with_etag(task_repr(task))

    def delete(self, request: Request, task_id: int) -> Response:
        precondition = self.precondition(parsed(VersionOnly, request.data or {}))
        with bound_session(request) as session:
            services.task_delete(
                session=session,
                tenant_id=self.tenant_id,
                task_id=task_id,
                precondition=precondition,
            )
        return Response(status=204)


@extend_schema_view(
    post=extend_schema(
        operation_id="restoreTask",
        summary="Restore a soft-deleted task (admins; If-Match optional, never 428)",
        request=None,
        parameters=[IF_MATCH_HEADER, ETAG_HEADER],
        responses={200: openapi.TaskShape, **problems(409, 412)},
    ),
)
class TaskRestore(TaskflowView):
    required_roles = {"POST": Role.ADMIN}

    def post(self, request: Request, task_id: int) -> Response:
        precondition = self.precondition(parsed(VersionOnly, request.data or {}))
        with bound_session(request) as session:
            task = services.task_restore(
                session=session, tenant_id=self.tenant_id, task_id=task_id,
                precondition=precondition,
            )  # fmt: skip
            return with_etag(task_repr(task))


@extend_schema_view(
    get=extend_schema(
        operation_id="listTaskHistory",
        summary="A task's history, oldest first",
        responses={200: page_of(openapi.HistoryEntryShape, "HistoryPage")},
    ),
)
class TaskHistoryList(TaskflowView):
    query_parameters = {"get": openapi.HISTORY_LIST_QUERY}

    def get(self, request: Request, task_id: int) -> Response:
        with bound_session(request) as session:
            page = selectors.task_history(
                session=session, tenant_id=self.tenant_id, task_id=task_id, query=self.list_query()
            )
            return self.page_response(page, [history_repr(row) for row in page.items])


@extend_schema_view(
    get=extend_schema(
        operation_id="listTaskComments",
        summary="A task's comments",
        responses={200: page_of(openapi.CommentShape, "CommentPage")},
    ),
    post=extend_schema(
        operation_id="createTaskComment",
        summary="Comment on a task",
        request=CommentCreate,
        parameters=[ETAG_HEADER],
        responses={201: openapi.CommentShape},
    ),
)
class TaskComments(TaskflowView):
    query_parameters = {"get": openapi.COMMENT_LIST_QUERY}

    def get(self, request: Request, task_id: int) -> Response:
        with bound_session(request) as session:
            page = selectors.comment_list(
                session=session, tenant_id=self.tenant_id, task_id=task_id, query=self.list_query()
            )
            return self.rows_page_response(page, COMMENT_FIELDS)

    def post(self, request: Request, task_id: int) -> Response:
        data = parsed(CommentCreate, request.data)
        with bound_session(request) as session:
            comment = services.comment_create(
                session=session, tenant_id=self.tenant_id, task_id=task_id,
                author_id=principal_of(request).user_id, body=data["body"],
            )  # fmt: skip
            return with_etag(comment_repr(comment), 201)
