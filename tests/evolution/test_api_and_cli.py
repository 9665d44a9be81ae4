"""Evolutions through the operator API, the admin and the CLI: shapes, refusals as problem+json
or one-line errors with a non-zero exit (no worker: nothing here waits for a phase to run)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from control_plane.evolution import phases
from control_plane.evolution.models import Evolution, EvolutionRun, Phase
from control_plane.fanout.models import MigrationRun, Operation
from tests.factories import make_token, make_user, public_tenant

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
URL = "/ops/v1/evolutions/tasks_due_at"


@pytest.fixture
def ops(client: Client, unique: str) -> Client:
    token = make_token(make_user(f"staff{unique}@example.com", staff=True), public_tenant())
    client.defaults.update(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_the_api_lists_and_shows_evolutions_with_their_gate(ops) -> None:
    listed = ops.get("/ops/v1/evolutions").json()["results"]
    assert [e["name"] for e in listed] == ["tasks_due_at"]
    state = ops.get(URL).json()
    assert [p["phase"] for p in state["phases"]] == ["expand", "backfill", "switch", "contract"]
    assert state["switch"] == {"name": "tasks.due", "value": "due_date"}
    assert state["contract_gate"]["open"] is False
    assert ops.get("/ops/v1/evolutions/nope").status_code == 404


def test_phases_out_of_order_unconfirmed_rollbacks_and_closed_gates_are_409_problems(ops) -> None:
    cases: tuple[tuple[str, dict[str, object], str], ...] = (
        (f"{URL}/phases/backfill", {}, "backfill follows expand"),
        (f"{URL}/phases/contract", {}, "follows switch"),
        (f"{URL}/phases/expand/rollback", {}, "confirm"),
    )
    for path, body, detail in cases:
        response = ops.post(path, body, content_type="application/json")
        assert response.status_code == 409, response.content
        assert response["Content-Type"] == PROBLEM
        assert detail in response.json()["detail"]
    response = ops.post(f"{URL}/phases/sideways", {}, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (404, PROBLEM)
    response = ops.post(f"{URL}/phases/expand", {"confirm": "yes"}, content_type="application/json")
    assert (response.status_code, response["Content-Type"]) == (400, PROBLEM)
    assert not EvolutionRun.objects.exists()


def test_starting_the_expand_records_a_fan_out_and_is_idempotent(ops) -> None:
    response = ops.post(f"{URL}/phases/expand", {}, content_type="application/json")
    assert response.status_code == 202
    state = response.json()
    assert state["status"] == "running"
    assert state["current"]["phase"] == "expand"
    run = MigrationRun.objects.get(pk=state["current"]["run"])
    assert (run.requested_revision, run.operation) == ("0008", Operation.MIGRATE)
    again = ops.post(f"{URL}/phases/expand", {}, content_type="application/json").json()
    assert again["current"]["run"] == run.pk
    conflict = ops.post(f"{URL}/phases/expand/rollback", {"confirm": True},
                        content_type="application/json")  # fmt: skip
    assert conflict.status_code == 409
    cancelled = ops.post(f"{URL}/cancel", content_type="application/json").json()
    assert cancelled["status"] == "cancelled"


def test_a_backfill_run_has_the_expand_revisions_backfill_and_never_skips() -> None:
    evolution = phases.get_evolution("tasks_due_at")
    Evolution.objects.filter(pk=evolution.pk).update(completed=Phase.EXPAND)
    record = phases.start_phase(evolution, Phase.BACKFILL)
    assert record is not None
    assert record.run.operation == Operation.BACKFILL
    assert record.run.options == {
        "batch_rows": 1000,
        "throttle_ms": 0,
        "lanes": 0,
        "revision": "0007",
    }
    assert record.run.verify is True


def test_the_cli_refuses_in_one_line_with_a_non_zero_exit() -> None:
    with pytest.raises(CommandError, match="backfill follows expand"):
        call_command("evolve", "tasks_due_at", "backfill")
    with pytest.raises(CommandError, match="pass --yes"):
        call_command("evolve", "tasks_due_at", "expand", "--rollback")
    with pytest.raises(CommandError, match="No evolution"):
        call_command("evolve", "nope", "status")
    out = io.StringIO()
    call_command("evolve", "tasks_due_at", "status", stdout=out)
    assert "contract gate closed" in out.getvalue()


def test_the_admin_page_shows_the_phases_and_polls_its_state(admin_client: Client) -> None:
    evolution = phases.get_evolution("tasks_due_at")
    admin_client.defaults.update(HTTP_HOST="localhost")
    page = admin_client.get(f"/admin/evolution/evolution/{evolution.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="evolution-page"' in body
    assert "evolution_page.js" in body
    state = admin_client.get(f"/admin/evolution/evolution/{evolution.pk}/state/").json()
    assert state["name"] == "tasks_due_at"
    refused = admin_client.post(
        f"/admin/evolution/evolution/{evolution.pk}/act/", {"action": "rollback:expand"}
    )
    assert refused.status_code == 302
    assert not EvolutionRun.objects.exists()
