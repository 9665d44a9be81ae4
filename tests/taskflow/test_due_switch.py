"""This release of the API reads tasks.due_date: it says so, and the evolution's contract gate
(which drops that column) stays closed while it serves (control_plane.evolution)."""

from __future__ import annotations

from control_plane.evolution import phases
from tenants import switches
from tests.taskflow.conftest import TenantFixture


def test_this_release_reports_that_it_serves_due_date_so_the_contract_gate_waits(
    tenant_a: TenantFixture,
) -> None:
    switches._reported.clear()
    for key in switches._redis().scan_iter(match="switch:tasks.due:*"):
        switches._redis().delete(key)
    response = tenant_a.client("viewer").get("/api/v1/tasks")
    assert response.status_code == 200
    assert switches.process_name() in switches.served("tasks.due", "due_date")
    gate = phases.contract_gate(phases.get_evolution("tasks_due_at"))
    assert any("served due_date" in reason for reason in gate.reasons)
