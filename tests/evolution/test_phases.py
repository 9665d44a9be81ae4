"""The due_at evolution end to end, over schema tenants and the shared schema's rls tenants:
real PostgreSQL, Redis and a Celery worker process running every phase as a fan-out."""

from __future__ import annotations

import datetime as dt

import pytest

from control_plane.evolution import phases
from control_plane.evolution.models import Phase
from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus, StepStatus
from tenants import switches
from tenants.cloning import TEMPLATE_SCHEMA, read_revisions
from tenants.database_roles import owner_connection
from tenants.placement import SHARED_SCHEMA
from tests.evolution.support import (
    EXPAND_TARGET,
    add_tasks,
    columns_of,
    completed_without_watching,
    execute,
    indexes_of,
    make_rls_tenants,
    make_tenants,
    restore_platform,
    rows,
    set_template,
    wait_for,
)
from tests.evolution.test_release import CONTRACT_FILES, copy_versions
from tests.fanout.support import wait_for_run

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("evolution_worker", "committed")]

UTC = dt.UTC


def midnight(day: dt.date | None) -> dt.datetime | None:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


@pytest.fixture
def platform(unique: str):
    """Template and shared at the expand's parent; 3 schema and 2 rls tenants with tasks."""
    prefix = f"e{unique[:8]}"
    set_template("", "0006")
    schema_tenants = make_tenants(prefix, 3)
    rls_tenants = make_rls_tenants(prefix, 2)
    for i, tenant in enumerate([*schema_tenants, *rls_tenants]):
        add_tasks(tenant, 20 + i)
    phases.get_evolution("tasks_due_at").delete()
    evolution = phases.get_evolution("tasks_due_at")
    phases.set_options(evolution, {"batch_rows": 7, "concurrency": 2, "batch_size": 2})
    yield evolution, schema_tenants, rls_tenants
    restore_platform(prefix)


def test_expand_backfill_switch_contract_with_rollbacks(platform, tmp_path) -> None:
    evolution, schema_tenants, rls_tenants = platform
    everyone = [*schema_tenants, *rls_tenants]
    schemas = [TEMPLATE_SCHEMA, SHARED_SCHEMA, *(t.schema_name for t in schema_tenants)]

    # Expand: the column, the sync trigger and the twin indexes everywhere, nothing filled yet.
    assert phases.start_phase(evolution, Phase.EXPAND) is not None
    state = wait_for(evolution)
    assert (state["status"], state["completed"]) == ("idle", "expand"), state
    for schema in schemas:
        assert "due_at" in columns_of(schema)
        found = indexes_of(schema)
        assert found.get("tasks_due_at_sort_live"), schema
        assert found.get("tasks_priority_due_at_sort_live"), schema
    with owner_connection() as conn:
        assert read_revisions(conn, TEMPLATE_SCHEMA)["alembic"] == EXPAND_TARGET
    old_rows = rows(schema_tenants[0])
    assert any(r[1] is not None and r[2] is None for r in old_rows)  # not backfilled yet

    # Both writers coexist: old code writes due_date, new code writes due_at.
    tenant = schema_tenants[0]
    first, second = old_rows[0][0], old_rows[1][0]
    execute(tenant, "UPDATE {s}.tasks SET due_date = date '2027-01-05' WHERE id = %s", (first,))
    execute(
        tenant,
        "UPDATE {s}.tasks SET due_at = timestamptz '2027-02-03 22:30+00' WHERE id = %s",
        (second,),
    )
    by_id = {r[0]: r for r in rows(tenant)}
    assert by_id[first][2] == dt.datetime(2027, 1, 5, tzinfo=UTC)
    assert by_id[second][1] == dt.date(2027, 2, 3)
    # History records the new column.
    history = execute(
        tenant,
        "SELECT changes FROM {s}.tasks_history WHERE row_id = %s ORDER BY id DESC LIMIT 1",
        (second,),
    )
    assert "due_at" in history[0][0]
    assert "due_date" in history[0][0]

    # Expand rolls back (a confirmed downgrade fan-out), and runs again: idempotent.
    with pytest.raises(phases.NotConfirmed):
        phases.rollback(evolution, Phase.EXPAND)
    phases.rollback(evolution, Phase.EXPAND, confirm=True)
    state = wait_for(evolution)
    assert (state["status"], state["completed"]) == ("idle", ""), state
    assert all("due_at" not in columns_of(schema) for schema in schemas)
    phases.start_phase(evolution, Phase.EXPAND)
    assert wait_for(evolution)["completed"] == "expand"
    assert phases.start_phase(evolution, Phase.EXPAND) is None  # done: nothing to run

    # Backfill: batched, every schema, progress per schema; then every row agrees.
    with pytest.raises(phases.EvolutionConflict):
        phases.start_phase(evolution, Phase.SWITCH)  # gates: backfill first
    record = phases.start_phase(evolution, Phase.BACKFILL)
    assert record is not None
    state = wait_for(evolution)
    assert (state["status"], state["completed"]) == ("idle", "backfill"), state
    for t in everyone:
        for _id, due_date, due_at in rows(t):
            assert due_at == midnight(due_date)
    steps = {s.schema_name: s for s in record.run.steps.all()}
    shared = [s for name, s in steps.items() if name.split("/")[0] == SHARED_SCHEMA]
    assert len(shared) == 2  # its lanes (as many as the concurrency), filled side by side
    assert sum(int(s.progress["rows"]) for s in shared) >= sum(
        sum(1 for r in rows(t) if r[1] is not None) for t in rls_tenants
    )
    written = sum(int(s.progress.get("rows", 0)) for s in steps.values())
    assert written > 0
    assert all(s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in steps.values())

    # Switch: a sweep that writes nothing, then the read switch flips; it rolls back and again.
    assert switches.stored("tasks.due") in (None, "due_date")
    sweep = phases.start_phase(evolution, Phase.SWITCH)
    assert wait_for(evolution)["completed"] == "switch"
    assert sweep is not None
    assert sum(int(s.progress.get("rows", 0)) for s in sweep.run.steps.all()) == 0
    assert switches.stored("tasks.due") == "due_at"
    phases.rollback(evolution, Phase.SWITCH, confirm=True)
    assert switches.stored("tasks.due") == "due_date"
    assert phases.evolution_state(evolution)["completed"] == "backfill"
    phases.start_phase(evolution, Phase.SWITCH)
    assert wait_for(evolution)["completed"] == "switch"
    assert switches.stored("tasks.due") == "due_at"

    # Contract: the gate sees a process still serving the old shape; overriding needs confirming.
    old_process = switches._served_key("tasks.due", "due_date")
    switches._redis().set(old_process, 1, ex=30)
    try:
        gate = phases.contract_gate(evolution)
        assert not gate.open
        assert "served due_date" in gate.reasons[0]
        with pytest.raises(phases.GateClosed):
            phases.start_phase(evolution, Phase.CONTRACT)
        with pytest.raises(phases.NotConfirmed):
            phases.start_phase(evolution, Phase.CONTRACT, override=True)
    finally:
        # This one, and any other process of the test session that served the API lately.
        for key in switches._redis().scan_iter(match="switch:tasks.due:due_date:*"):
            switches._redis().delete(key)
    assert phases.contract_gate(evolution).open
    phases.start_phase(evolution, Phase.CONTRACT)
    # Each run is settled by the worker that finished it: the column's run starts after the
    # indexes', and the phase is recorded, with nobody here settling anything.
    assert completed_without_watching(evolution, Phase.CONTRACT)
    state = wait_for(evolution)
    assert (state["status"], state["completed"]) == ("idle", "contract"), state
    contract_runs = [r for r in state["runs"] if r["phase"] == "contract"]
    assert [r["status"] for r in contract_runs] == [RunStatus.SUCCEEDED] * 2
    for schema in schemas:
        assert "due_date" not in columns_of(schema)
        assert "due_at" in columns_of(schema)
        found = indexes_of(schema)
        assert "tasks_due_sort_live" not in found
        assert "tasks_priority_due_sort_live" not in found
        assert all(found.values()), schema
    # History written before stays readable, with the old column's values in it.
    history = execute(
        tenant, "SELECT changes FROM {s}.tasks_history WHERE row_id = %s ORDER BY id", (first,)
    )
    assert any("due_date" in h[0] for h in history)
    # Writes after the contract record due_at only.
    execute(tenant, "UPDATE {s}.tasks SET due_at = now() WHERE id = %s", (first,))
    last = execute(
        tenant,
        "SELECT changes FROM {s}.tasks_history WHERE row_id = %s ORDER BY id DESC LIMIT 1",
        (first,),
    )[0][0]
    assert set(last) == {"due_at"}

    # Until a release marks the contract released, "head" stays below it: a run to "head" is
    # refused as a downgrade. Marked released, "head" is the contract and finds nothing to do.
    with pytest.raises(runs.DowngradeNotConfirmed):
        runs.start_run(to="head")
    released = copy_versions(tmp_path, released=CONTRACT_FILES)
    run = wait_for_run(runs.start_run(to="head", script_location=released).pk, timeout=120)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.target["alembic"] == "0007c"
    assert runs.run_counts(run)["failed"] == 0


def test_a_cancelled_backfill_resumes_where_it_stopped(platform) -> None:
    evolution, schema_tenants, rls_tenants = platform
    phases.set_options(evolution, {"batch_rows": 3, "throttle_ms": 30, "concurrency": 1})
    phases.start_phase(evolution, Phase.EXPAND)
    assert wait_for(evolution)["completed"] == "expand"
    record = phases.start_phase(evolution, Phase.BACKFILL)
    assert record is not None

    def some_rows_written() -> bool:
        return any(int(s.progress.get("rows", 0)) > 0 for s in record.run.steps.all())

    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    while not some_rows_written():
        assert dt.datetime.now() < deadline
    phases.cancel(evolution)
    state = wait_for(evolution)
    assert state["status"] == RunStatus.CANCELLED
    with pytest.raises(phases.EvolutionConflict):
        phases.start_phase(evolution, Phase.BACKFILL)  # stopped: resume it
    phases.set_options(evolution, {"throttle_ms": 0})
    phases.resume(evolution)
    state = wait_for(evolution)
    assert state["completed"] == "backfill", state
    for t in [*schema_tenants, *rls_tenants]:
        for _id, due_date, due_at in rows(t):
            assert due_at == midnight(due_date)
