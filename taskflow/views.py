"""The TaskFlow REST API: thin views that parse, call one service or selector, and render."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from taskflow import selectors, services
from taskflow.errors import InvalidInput
from taskflow.filters import task_filters
from taskflow.pagination import Page, parse_limit
from taskflow.permissions import TenantRole
from taskflow.representations import (
    comment_repr,
    comment_row_repr,
    history_repr,
    project_repr,
    project_row_repr,
    task_repr,
    task_row_repr,
)
from taskflow.serializers import (
    CommentCreate,
    ProjectCreate,
    ProjectPatch,
    TaskCreate,
    TaskPatch,
    VersionOnly,
)
from tenants.binding import bound_session
from tenants.identity import Role, principal_of

ETAG = re.compile(r'^(?:W/)?"?([0-9]{1,18})"?$')  # a version: an integer column


class TaskflowView(APIView):
    """A TaskFlow resource: a tenant's members by role; `bound_session` for its one transaction."""

    permission_classes = (IsAuthenticated, TenantRole)

    @property
    def tenant_id(self) -> int:
        return principal_of(self.request).tenant_id

    def list_query(self) -> selectors.ListQuery:
        params = self.request.query_params
        return selectors.ListQuery(
            sort=params.get("sort"),
            cursor=params.get("cursor") or None,
            limit=parse_limit(params.get("limit")),
            include_deleted=params.get("include_deleted") in {"1", "true"},
        )

    def page_response(self, page: Page[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
        return Response(
            {
                "results": [render(row) for row in page.items],
                "next": self._link(page.next_cursor),
                "previous": self._link(page.previous_cursor),
            }
        )

    def _link(self, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        params = [(k, v) for k, v in self.request.query_params.items() if k != "cursor"]
        params.append(("cursor", cursor))
        return self.request.build_absolute_uri(f"{self.request.path}?{urlencode(params)}")

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


class ProjectCollection(TaskflowView):
    def get(self, request: Request) -> Response:
        with bound_session(request) as session:
            page = selectors.project_list(
                session=session, tenant_id=self.tenant_id, query=self.list_query()
            )
            return self.page_response(page, project_row_repr)

    def post(self, request: Request) -> Response:
        data = parsed(ProjectCreate, request.data)
        with bound_session(request) as session:
            project = services.project_create(session=session, tenant_id=self.tenant_id, data=data)
            body = project_repr(project)
        response = with_etag(body, 201)
        response["Location"] = f"/api/v1/projects/{body['id']}"
        return response


class ProjectDetail(TaskflowView):
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


class TaskCollection(TaskflowView):
    def get(self, request: Request) -> Response:
        filters = task_filters(request.query_params)
        with bound_session(request) as session:
            page = selectors.task_list(
                session=session, tenant_id=self.tenant_id, filters=filters, query=self.list_query()
            )
            return self.page_response(page, task_row_repr)

    def post(self, request: Request) -> Response:
        data = parsed(TaskCreate, request.data)
        with bound_session(request) as session:
            task = services.task_create(session=session, tenant_id=self.tenant_id, data=data)
            body = task_repr(task)
        response = with_etag(body, 201)
        response["Location"] = f"/api/v1/tasks/{body['id']}"
        return response


class TaskDetail(TaskflowView):
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


class TaskHistoryList(TaskflowView):
    def get(self, request: Request, task_id: int) -> Response:
        with bound_session(request) as session:
            page = selectors.task_history(
                session=session, tenant_id=self.tenant_id, task_id=task_id, query=self.list_query()
            )
            return self.page_response(page, history_repr)


class TaskComments(TaskflowView):
    def get(self, request: Request, task_id: int) -> Response:
        with bound_session(request) as session:
            page = selectors.comment_list(
                session=session, tenant_id=self.tenant_id, task_id=task_id, query=self.list_query()
            )
            return self.page_response(page, comment_row_repr)

    def post(self, request: Request, task_id: int) -> Response:
        data = parsed(CommentCreate, request.data)
        with bound_session(request) as session:
            comment = services.comment_create(
                session=session, tenant_id=self.tenant_id, task_id=task_id,
                author_id=principal_of(request).user_id, body=data["body"],
            )  # fmt: skip
            return with_etag(comment_repr(comment), 201)
