"""Where one list request's time goes: each step of the request path timed on its own, in-process.

Used by tests.benchmarks.bench_taskflow_api (section 4). Every step runs `n` times after a
warm-up, sequentially, against the benchmark's database: wall time per call (including the
PostgreSQL or Redis round trips) and this thread's CPU time per call (thread_time, so other
processes on the machine count less). The whole requests go through Django's test client:
every middleware, DRF, authentication and rendering, without gunicorn's HTTP handling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Step:
    label: str
    wall_ms: float
    cpu_ms: float
    note: str = ""


def timed(label: str, call: Callable[[], Any], n: int, note: str = "") -> Step:
    for _ in range(max(n // 10, 5)):
        call()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        call()
    return Step(
        label,
        (time.perf_counter() - wall) / n * 1000,
        (time.thread_time() - cpu) / n * 1000,
        note,
    )


def breakdown(tenant: Any, token: str, host: str, limit: int, n: int) -> list[Step]:
    from django.db import connection
    from django.test import Client
    from rest_framework.renderers import JSONRenderer

    from control_plane.http.renderers import FastJSONRenderer
    from control_plane.identity.authentication import authenticate_token
    from control_plane.identity.principals import forget_principals
    from control_plane.identity.tokens import token_digest
    from taskflow import selectors
    from taskflow.filters import TaskFilters
    from taskflow.representations import task_row_repr
    from tenants.binding import binding_for, engine, tenant_session
    from tenants.resolution import resolve_tenant
    from tests.benchmarks.taskflow_api.models import BenchTask
    from tests.benchmarks.taskflow_api.views import TaskSerializer

    client = Client(HTTP_HOST=host, headers={"Authorization": f"Bearer {token}"})
    binding = binding_for(tenant, actor_id=1, request_id="bench")
    query = selectors.ListQuery(limit=limit)
    filters = TaskFilters()
    steps: list[Step] = []

    def get(path: str) -> None:
        response = client.get(path)
        assert response.status_code == 200, response.content[:300]

    steps.append(
        timed(
            "TaskFlow GET /api/v1/tasks, whole request (test client)",
            lambda: get(f"/api/v1/tasks?limit={limit}"),
            n,
        )
    )
    steps.append(
        timed(
            "DRF GET /bench/drf-tasks, whole request (test client)",
            lambda: get(f"/bench/drf-tasks?limit={limit}"),
            n,
        )
    )
    steps.append(
        timed(
            "both: tenant resolution, resolve_tenant (Redis GET, cache hit)",
            lambda: resolve_tenant(host),
            n,
        )
    )

    steps.append(
        timed(
            "both: token auth, warm (the cached principal)",
            lambda: authenticate_token(token, tenant=tenant),
            n,
            "1 Redis GET, no query",
        )
    )

    def cold_auth() -> None:
        # as TenantMiddleware does: the next query issues SET search_path again
        connection.set_tenant(tenant)  # type: ignore[attr-defined]
        forget_principals([token_digest(token)])
        authenticate_token(token, tenant=tenant)

    steps.append(
        timed(
            "  cold: principal forgotten (SET search_path + token/user + membership)",
            cold_auth,
            n,
            "Redis SET + GET, 3 round trips",
        )
    )

    def checkout() -> None:
        engine().connect().close()

    steps.append(timed("TaskFlow: pool checkout + return", checkout, n, "no ping: a socket poll"))

    def raw_select() -> None:
        with engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            conn.commit()

    steps.append(
        timed(
            "  checkout + SELECT 1 + COMMIT, plain Connection",
            raw_select,
            n,
            "BEGIN+SELECT, COMMIT",
        )
    )

    def session_select() -> None:
        with tenant_session(binding) as session:
            session.execute(sa.text("SELECT 1"))

    steps.append(
        timed(
            "  same through tenant_session (+ Session, listener, set_config)",
            session_select,
            n,
            "+1 round trip",
        )
    )

    def listed() -> list[Any]:
        with tenant_session(binding) as session:
            page = selectors.task_list(
                session=session, tenant_id=tenant.pk, filters=filters, query=query
            )
        return page.items

    steps.append(
        timed(f"TaskFlow: tenant_session + task_list ({limit} rows, Core rows)", listed, n)
    )
    rows = listed()
    body = {"results": [task_row_repr(r) for r in rows], "next": "x", "previous": None}
    steps.append(
        timed(f"TaskFlow: task_row_repr x {limit}", lambda: [task_row_repr(r) for r in rows], n)
    )
    fast = FastJSONRenderer()
    steps.append(
        timed(
            "TaskFlow: FastJSONRenderer.render of the page (orjson)", lambda: fast.render(body), n
        )
    )
    renderer = JSONRenderer()

    def drf_query() -> list[BenchTask]:
        connection.set_tenant(tenant)  # type: ignore[attr-defined]
        return list(
            BenchTask.objects.filter(tenant_id=tenant.pk, deleted_at__isnull=True).order_by(
                "created_at", "id"
            )[: limit + 1]
        )

    steps.append(
        timed(f"DRF: Django ORM page query ({limit + 1} rows, + SET search_path)", drf_query, n)
    )
    objects = drf_query()[:limit]
    steps.append(
        timed(
            f"DRF: ModelSerializer(many=True).data x {limit}",
            lambda: TaskSerializer(objects, many=True).data,
            n,
        )
    )
    drf_body = {"results": TaskSerializer(objects, many=True).data, "next": "x", "previous": None}
    steps.append(
        timed("DRF: JSONRenderer.render of the page", lambda: renderer.render(drf_body), n)
    )
    connection.close()
    return steps
