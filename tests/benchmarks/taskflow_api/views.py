"""The benchmark's comparison views, mounted only by tests.benchmarks.taskflow_api.urls.

- OffsetTaskList: /api/v1/tasks's rows in the same order, reached with OFFSET instead of a
  keyset cursor; same authentication, permission, tenant-bound SQLAlchemy session and rendering.
- DrfTaskList: a plain DRF ListAPIView over the unmanaged Django model, DRF's CursorPagination
  (ordering created_at, id; page size from `limit`), a ModelSerializer with the fields of
  TASK_FIELDS; same authentication (the platform's bearer token, default in REST_FRAMEWORK) and
  the same permission classes as the TaskFlow views.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from django.db import connection, transaction
from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from taskflow import due
from taskflow.errors import InvalidInput
from taskflow.openapi import LIMIT, QueryParam, sort_param
from taskflow.pagination import Sort, parse_limit, parse_sort
from taskflow.permissions import TenantRole
from taskflow.representations import TASK_FIELDS, task_row_repr
from taskflow.selectors import TASK_SORTS, TASKS, task_sorts
from taskflow.views import TaskflowView
from tenants.binding import bound_session
from tenants.identity import principal_of
from tests.benchmarks.taskflow_api.models import BenchTask


def offset_statement(tenant_id: int, sort: Sort, offset: int, limit: int) -> sa.Select[Any]:
    """Live tasks of the tenant in `sort` order (the keyset's order, id last), by OFFSET."""
    exprs = [key.field.expression(TASKS.c) for key in sort.keys] + [TASKS.c.id]
    descending = [key.descending for key in sort.keys] + [sort.id_descending]
    order = [e.desc() if d else e.asc() for e, d in zip(exprs, descending, strict=True)]
    return (
        sa.select(*(TASKS.c[name] for name in TASK_FIELDS))
        .where(TASKS.c.tenant_id == tenant_id, TASKS.c.deleted_at.is_(None))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )


class OffsetTaskList(TaskflowView):
    query_parameters = {
        "get": (
            sort_param(TASK_SORTS, "created_at"),
            LIMIT,
            QueryParam("offset", "Rows to skip.", type="integer", minimum=0),
        )
    }

    def get(self, request: Request) -> Response:
        params = request.query_params
        sort = parse_sort(params.get("sort"), task_sorts(due.served()), "created_at")
        limit = parse_limit(params.get("limit"))
        try:
            offset = int(params.get("offset") or 0)
        except ValueError as exc:
            raise InvalidInput("offset", "offset must be an integer.") from exc
        with bound_session(request) as session:
            rows = session.execute(offset_statement(self.tenant_id, sort, offset, limit))
            return Response(
                {"results": [task_row_repr(row) for row in rows], "next": None, "previous": None}
            )


class TaskSerializer(serializers.ModelSerializer[BenchTask]):
    class Meta:
        model = BenchTask
        fields = TASK_FIELDS


class TaskCursorPagination(CursorPagination):
    ordering = ("created_at", "id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200


class DrfTaskList(ListAPIView[BenchTask]):
    """Plain DRF: its own JSONRenderer, not the platform's (control_plane.http.renderers)."""

    renderer_classes = (JSONRenderer,)
    serializer_class = TaskSerializer
    pagination_class = TaskCursorPagination
    permission_classes = (IsAuthenticated, TenantRole)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Row-level security guards the tenant's tables too: the ORM's statements run in one
        # transaction with the tenant bound, as the platform's sessions do (tenants.binding).
        with transaction.atomic(), connection.cursor() as cursor:
            tenant_id = principal_of(request).tenant_id
            cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
            return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[BenchTask]:
        # Plain django-tenants: the connection set to the tenant's schema (the platform's
        # middleware leaves Django's connection on public, tenants.middleware).
        connection.set_tenant(self.request._request.tenant)  # type: ignore[attr-defined]
        tenant_id = principal_of(self.request).tenant_id
        return BenchTask.objects.filter(tenant_id=tenant_id, deleted_at__isnull=True)
