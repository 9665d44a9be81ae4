"""The operator API of moves: list and watch a move, start one, retry a stuck one (problem+json).

A move by a real worker through the API is at the end; the others need no worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from control_plane.celery import app as celery_app
from control_plane.tenancy import moves
from control_plane.tenancy.models import MoveStatus, TenantMove
from control_plane.worker import recovery
from tenants.models import Isolation, TenantStatus
from tests.conftest import nobody_else_consumes
from tests.factories import make_tenant, make_token, make_user, public_tenant
from tests.taskflow.conftest import TenantFixture, discard, new_key, provisioned_tenant

PROBLEM = "application/problem+json"


def staff_client(unique: str) -> Client:
    user = make_user(f"mover{unique}@example.com", staff=True)
    token = make_token(user, public_tenant())
    return Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def ops(db, unique: str) -> Client:
    return staff_client(unique)


def start(ops: Client, slug: str, to: str) -> Any:
    return ops.post("/ops/v1/moves", {"tenant": slug, "to": to}, content_type="application/json")


@pytest.fixture
def no_other_worker() -> Iterator[None]:
    """Workers running from earlier tests leave the moves' queue alone; messages sent are purged."""
    with nobody_else_consumes(moves.MOVE_QUEUE):
        try:
            yield
        finally:
            celery_app.control.purge()


def test_a_started_move_is_202_queued_with_its_location_and_who_asked(ops, unique) -> None:
    tenant = make_tenant(f"mv{unique}")
    response = start(ops, tenant.slug, Isolation.RLS)
    assert response.status_code == 202, response.content
    move = TenantMove.objects.get(tenant=tenant)
    assert response["Location"] == f"/ops/v1/moves/{move.pk}"
    body = response.json()
    assert (body["id"], body["tenant"], body["source"], body["target"]) == (
        move.pk, tenant.slug, "schema", "rls",
    )  # fmt: skip
    assert (body["status"], body["finished"], body["rows_total"]) == ("queued", False, None)
    assert body["requested_by"] == f"mover{unique}@example.com"
    assert body["requested_via"] == "api"
    assert body["progress"]["elapsed_seconds"] >= 0
    assert ops.get(body["url"]).json()["id"] == move.pk


def test_a_refused_move_is_recorded_failed_and_answered_409_naming_it(ops, unique) -> None:
    archived = make_tenant(f"ar{unique}", status=TenantStatus.ARCHIVED)
    response = start(ops, archived.slug, Isolation.RLS)
    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    move = TenantMove.objects.get(tenant=archived)
    assert move.status == MoveStatus.FAILED
    assert response.json()["detail"] == move.error
    assert response.json()["move"] == f"/ops/v1/moves/{move.pk}"
    shown = ops.get(f"/ops/v1/moves/{move.pk}").json()
    assert (shown["status"], shown["finished"], shown["error"]) == ("failed", True, move.error)
    assert shown["progress"]["stuck"] is False


def test_a_second_move_of_a_tenant_being_moved_is_409(ops, unique) -> None:
    tenant = make_tenant(f"tw{unique}")
    assert start(ops, tenant.slug, Isolation.RLS).status_code == 202
    again = start(ops, tenant.slug, Isolation.RLS)
    assert again.status_code == 409
    assert again["Content-Type"] == PROBLEM
    assert "already being moved" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"tenant": "nobody-here", "to": "rls"}, 422),
        ({"tenant": "x", "to": "elsewhere"}, 400),
        ({"to": "rls"}, 400),
        ({"tenant": " ", "to": "rls"}, 400),
        ({"tenant": 7, "to": "rls"}, 400),
    ],
)
def test_a_bad_move_request_is_a_problem(ops, body, status) -> None:
    response = ops.post("/ops/v1/moves", body, content_type="application/json")
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    assert not TenantMove.objects.exists()


def test_the_list_is_newest_first_and_filters_by_status_and_tenant(ops, unique) -> None:
    first = make_tenant(f"l1{unique}")
    second = make_tenant(f"l2{unique}", status=TenantStatus.ARCHIVED)
    queued = moves.request_move(first, Isolation.RLS, send=False)
    refused = moves.request_move(second, Isolation.RLS, send=False)
    listed = ops.get("/ops/v1/moves").json()["results"]
    assert [m["id"] for m in listed][:2] == [refused.pk, queued.pk]
    failed = ops.get("/ops/v1/moves", {"status": "failed"}).json()["results"]
    assert [m["id"] for m in failed] == [refused.pk]
    mine = ops.get("/ops/v1/moves", {"tenant": first.slug}).json()["results"]
    assert [m["id"] for m in mine] == [queued.pk]
    bad = ops.get("/ops/v1/moves", {"status": "lost"})
    assert (bad.status_code, bad["Content-Type"]) == (400, PROBLEM)


def test_moves_need_a_staff_token_and_an_unknown_move_is_404(ops, client, unique) -> None:
    assert client.get("/ops/v1/moves", HTTP_HOST="localhost").status_code in (401, 403)
    missing = ops.get("/ops/v1/moves/999999999")
    assert (missing.status_code, missing["Content-Type"]) == (404, PROBLEM)
    assert ops.post("/ops/v1/moves/999999999/retry").status_code == 404


def test_a_stuck_move_is_retried_once_and_a_finished_one_never(
    ops, unique, no_other_worker
) -> None:
    """The request's message never left (its commit callback is not run here): the move is
    queued with no message waiting and no worker, so it shows stuck; retry sends it, and then
    it waits for a worker, so a second retry is 409."""
    tenant = make_tenant(f"st{unique}")
    move_id = start(ops, tenant.slug, Isolation.RLS).json()["id"]
    shown = ops.get(f"/ops/v1/moves/{move_id}").json()
    assert shown["progress"]["stuck"] is True
    first = ops.post(f"/ops/v1/moves/{move_id}/retry")
    assert first.status_code == 202, first.content
    assert (first.json()["status"], first.json()["progress"]["stuck"]) == ("queued", False)
    again = ops.post(f"/ops/v1/moves/{move_id}/retry")
    assert (again.status_code, again["Content-Type"]) == (409, PROBLEM)
    assert "has a message waiting for a worker" in again.json()["detail"]

    refused = moves.request_move(make_tenant(f"sf{unique}"), Isolation.SCHEMA, send=False)
    finished = ops.post(f"/ops/v1/moves/{refused.pk}/retry")
    assert (finished.status_code, finished["Content-Type"]) == (409, PROBLEM)
    assert "is not retried" in finished.json()["detail"]


def test_a_move_a_live_worker_holds_is_not_retried(ops, unique) -> None:
    move = moves.request_move(make_tenant(f"lh{unique}"), Isolation.RLS, send=False)
    with recovery.running(moves.MOVES, move.pk) as mine:
        assert mine
        assert moves.claim_move(move.pk, worker="w1")
        shown = ops.get(f"/ops/v1/moves/{move.pk}").json()
        assert (shown["status"], shown["worker"], shown["progress"]["stuck"]) == (
            "copying", "w1", False,
        )  # fmt: skip
        held = ops.post(f"/ops/v1/moves/{move.pk}/retry")
    assert held.status_code == 409
    assert "running on a live worker" in held.json()["detail"]


@pytest.fixture
def rls_tenant(committed) -> Iterator[TenantFixture]:
    fixture = provisioned_tenant(Isolation.RLS)
    yield fixture
    discard(fixture)


@pytest.mark.worker
def test_a_move_started_through_the_api_is_watched_to_done_by_a_worker(
    rls_tenant: TenantFixture, celery_worker_process, unique
) -> None:
    api = rls_tenant.api("admin")
    project = api.post("/api/v1/projects", {"key": new_key(), "name": "M"})
    assert project.status_code == 201, project.content
    ops = staff_client(unique)
    response = start(ops, rls_tenant.tenant.slug, Isolation.SCHEMA)
    assert response.status_code == 202, response.content
    url = response["Location"]
    deadline = time.monotonic() + 60
    shown = ops.get(url).json()
    while not shown["finished"] and time.monotonic() < deadline:
        time.sleep(0.2)
        shown = ops.get(url).json()
    assert (shown["status"], shown["error"]) == ("done", "")
    assert shown["rows"]["projects"] == 1
    assert shown["rows_total"] == sum(shown["rows"].values())
    assert shown["seconds"] is not None
    assert shown["attempts"] == 1
    assert shown["started_at"] is not None
    assert shown["finished_at"] is not None
    assert ops.get(f"/ops/v1/tenants/{rls_tenant.tenant.slug}").json()["isolation"] == "schema"
