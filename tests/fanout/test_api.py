"""The fan-out's operator API: staff tokens, problem+json errors, resume and cancel."""

from __future__ import annotations

import pytest
from django.test import Client

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus, TenantMigration
from tests.factories import make_tenant, make_token, make_user, public_tenant
from tests.migrations_sqla.support import BASE_REVISION

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def ops(client: Client, unique: str) -> Client:
    token = make_token(make_user(f"staff{unique}@example.com", staff=True), public_tenant())
    client.defaults.update(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_post_starts_a_run_and_get_shows_it(ops, unique) -> None:
    tenant = make_tenant(f"api{unique}")
    body = {"tenants": [tenant.slug], "canary": 0, "batch_size": 10, "max_failures": "10%"}
    response = ops.post("/ops/v1/migration-runs", body, content_type="application/json")
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert response["Location"] == f"/ops/v1/migration-runs/{run_id}"
    state = ops.get(f"/ops/v1/migration-runs/{run_id}").json()
    assert state["status"] == RunStatus.PENDING
    assert state["tenants"] == [tenant.slug]
    assert state["strategy"]["max_failures"] == "10%"
    assert state["strategy"]["batch_size"] == 10
    assert state["counts"]["total"] == 0
    listed = ops.get("/ops/v1/migration-runs").json()["results"]
    assert run_id in [r["id"] for r in listed]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"to": "nope"}, 422, "no revision"),
        ({"tenants": ["missing_tenant"]}, 422, "missing_tenant"),
        ({"max_failures": "101%"}, 422, "at most 100%"),
        ({"max_failures": "lots"}, 400, "max_failures"),
        ({"max_failures": " 5"}, 400, "max_failures"),
        ({"lock_timeout": "1 week"}, 400, "lock_timeout"),
    ],
)
def test_invalid_runs_are_problems(ops, body, status, detail) -> None:
    """Malformed (the description rules it out): 400; well-formed but naming what does not
    exist or is out of bounds: 422."""
    before = MigrationRun.objects.count()
    response = ops.post("/ops/v1/migration-runs", body, content_type="application/json")
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert detail in problem["detail"] + str(problem.get("errors", ""))
    assert MigrationRun.objects.count() == before


def test_a_downgrade_run_needs_confirm_downgrade(ops, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the CLI's --yes-downgrade and the admin's confirmation page: nothing starts until
    the body says so, and the refusal names the field."""
    monkeypatch.setattr(runs, "downgrades", lambda *_args: ["newer"])
    before = MigrationRun.objects.count()
    refused = ops.post("/ops/v1/migration-runs", {}, content_type="application/json")
    assert refused.status_code == 409, refused.content
    assert refused["Content-Type"] == PROBLEM
    problem = refused.json()
    assert problem["title"] == "Downgrade not confirmed"
    assert [e["field"] for e in problem["errors"]] == ["confirm_downgrade"]
    assert "confirm_downgrade: true" in problem["detail"]
    no = ops.post(
        "/ops/v1/migration-runs", {"confirm_downgrade": False}, content_type="application/json"
    )
    assert no.status_code == 409
    assert MigrationRun.objects.count() == before
    started = ops.post(
        "/ops/v1/migration-runs", {"confirm_downgrade": True}, content_type="application/json"
    )
    assert started.status_code == 202, started.content
    run_id = started.json()["id"]
    assert ops.post(f"/ops/v1/migration-runs/{run_id}/cancel").status_code == 200
    again = ops.post(f"/ops/v1/migration-runs/{run_id}/resume")
    assert again.status_code == 409
    assert [e["field"] for e in again.json()["errors"]] == ["confirm_downgrade"]
    resumed = ops.post(
        f"/ops/v1/migration-runs/{run_id}/resume",
        {"confirm_downgrade": True},
        content_type="application/json",
    )
    assert resumed.status_code == 202, resumed.content


def test_cancel_then_resume_and_conflicts_are_409(ops) -> None:
    run_id = ops.post("/ops/v1/migration-runs", {}, content_type="application/json").json()["id"]
    cancelled = ops.post(f"/ops/v1/migration-runs/{run_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == RunStatus.CANCELLED
    again = ops.post(f"/ops/v1/migration-runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again["Content-Type"] == PROBLEM
    resumed = ops.post(f"/ops/v1/migration-runs/{run_id}/resume")
    assert resumed.status_code == 202
    assert resumed.json()["status"] in (RunStatus.PENDING, RunStatus.RUNNING)
    assert ops.post(f"/ops/v1/migration-runs/{run_id}/resume").status_code == 409


def test_retry_one_tenant_queues_only_that_tenant(ops, unique) -> None:
    tenant = make_tenant(f"rt{unique}")
    run = MigrationRun.objects.create(status=RunStatus.FAILED, target={"alembic": BASE_REVISION})
    step = TenantMigration.objects.create(
        run=run, tenant=tenant, schema_name=tenant.schema_name, status=StepStatus.FAILED, error="x"
    )
    response = ops.post(f"/ops/v1/migration-runs/{run.pk}/tenants/{tenant.slug}/retry")
    assert response.status_code == 202
    step.refresh_from_db()
    assert step.status == StepStatus.PENDING
    assert step.batch == 1
    assert (
        ops.post(f"/ops/v1/migration-runs/{run.pk}/tenants/{tenant.slug}/retry").status_code == 409
    )
    assert ops.post(f"/ops/v1/migration-runs/{run.pk}/tenants/nobody/retry").status_code == 404


def test_unknown_run_is_404_and_tenant_tokens_are_refused(ops, client, unique) -> None:
    assert ops.get("/ops/v1/migration-runs/999999").status_code == 404
    anonymous = Client(HTTP_HOST="localhost")
    assert anonymous.get("/ops/v1/migration-runs").status_code == 401
    user = make_user(f"plain{unique}@example.com")
    token = make_token(user, public_tenant())
    plain = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert plain.get("/ops/v1/migration-runs").status_code == 401


@pytest.mark.parametrize("number", [str(2**63), "9" * 5000, "0"])
@pytest.mark.parametrize("tail", ["", "/resume", "/cancel", "/tenants/t1/retry"])
def test_run_ids_outside_bigint_are_404_problems(ops, number: str, tail: str) -> None:
    response = (ops.post if tail else ops.get)(f"/ops/v1/migration-runs/{number}{tail}")
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize("field", ["canary", "concurrency", "batch_size"])
def test_run_counts_past_their_column_are_400_problems(ops, field: str) -> None:
    response = ops.post("/ops/v1/migration-runs", {field: 2**40}, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_a_failure_budget_past_its_column_is_a_400_problem(ops) -> None:
    response = ops.post(
        "/ops/v1/migration-runs", {"max_failures": "9" * 12}, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize(
    ("params", "field"), [({"q": "x" * 201}, "q"), ({"status": "AAA"}, "status")]
)
def test_run_step_filters_outside_their_declaration_are_400_problems(ops, params, field) -> None:
    """Found by schemathesis: a 201-character `q` and `status=AAA` answered 200."""
    run = MigrationRun.objects.create(requested_revision="head")
    response = ops.get(f"/ops/v1/migration-runs/{run.pk}", params)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == field
    assert ops.get(f"/ops/v1/migration-runs/{run.pk}", {"q": "x" * 200}).status_code == 200
