"""The shared schema's backfill in lanes: planned over the rls tenants' pending rows (a lane
boundary may fall inside a tenant), filled side by side by the fan-out's workers, every row once,
and carried on after a SIGKILL of the whole worker from each lane's recorded position."""

from __future__ import annotations

import datetime as dt

import pytest

from control_plane.celery import app as celery_app
from control_plane.evolution import phases
from control_plane.evolution.models import Phase
from control_plane.fanout.models import LANE_STEPS, RunStatus, StepStatus
from tenants.placement import SHARED_SCHEMA
from tests.evolution.support import (
    add_tasks,
    make_rls_tenants,
    make_tenants,
    restore_platform,
    rows,
    set_template,
    wait_for,
)
from tests.fanout.conftest import start_worker
from tests.fanout.support import kill_process_tree, wait_until

pytestmark = [
    pytest.mark.worker,
    pytest.mark.empty_shared_schema,
    pytest.mark.usefixtures("committed"),
]

UTC = dt.UTC


def midnight(day: dt.date | None) -> dt.datetime | None:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


@pytest.fixture
def shared_heavy(unique: str):
    """One schema tenant, and rls tenants of very different sizes (one holds most rows)."""
    prefix = f"l{unique[:8]}"
    set_template("", "0006")
    schema_tenants = make_tenants(prefix, 1)
    rls = make_rls_tenants(prefix, 4)
    for tenant, count in zip([*schema_tenants, *rls], (10, 12, 400, 5, 60), strict=True):
        add_tasks(tenant, count)
    phases.get_evolution("tasks_due_at").delete()
    evolution = phases.get_evolution("tasks_due_at")
    phases.set_options(evolution, {"batch_rows": 10, "concurrency": 3, "batch_size": 5})
    yield evolution, schema_tenants, rls
    celery_app.control.purge()
    worker = start_worker("lanes-restore")  # the tests' own workers are gone by now
    try:
        restore_platform(prefix)
    finally:
        worker.stop()


def pending_in(tenants) -> int:
    return sum(1 for t in tenants for _id, due_date, _at in rows(t) if due_date is not None)


def assert_filled(tenants) -> None:
    for tenant in tenants:
        for _id, due_date, due_at in rows(tenant):
            assert due_at == midnight(due_date), (tenant.slug, _id)


def test_the_shared_backfill_runs_in_lanes_that_cover_every_row_once(shared_heavy) -> None:
    evolution, schema_tenants, rls = shared_heavy
    celery_app.control.purge()
    worker = start_worker("lanes", concurrency=3)
    try:
        phases.set_options(evolution, {"lanes": 3})
        phases.start_phase(evolution, Phase.EXPAND)
        assert wait_for(evolution)["completed"] == "expand"
        record = phases.start_phase(evolution, Phase.BACKFILL)
        assert record is not None
        state = wait_for(evolution)
    finally:
        worker.stop()
    assert state["completed"] == "backfill", state
    run = record.run
    lanes = list(run.steps.filter(LANE_STEPS).order_by("schema_name"))
    assert [s.schema_name for s in lanes] == [f"{SHARED_SCHEMA}/{n}" for n in (1, 2, 3)]
    assert {s.status for s in lanes} == {StepStatus.SUCCEEDED}
    assert not run.steps.filter(schema_name=SHARED_SCHEMA).exists()  # no serial step
    # Contiguous: each lane ends where the next starts; the big tenant is split.
    bounds = [s.progress["lane"] for s in lanes]
    assert bounds[0]["from"] is None
    assert bounds[-1]["to"] is None
    assert [b["to"] for b in bounds[:-1]] == [b["from"] for b in bounds[1:]]
    assert bounds[1]["from"][0] == rls[1].pk  # the 400-row tenant holds the first cut
    # Every pending row was written by exactly one lane: the lanes' counts add up.
    assert sum(int(s.progress["rows"]) for s in lanes) == pending_in(rls)
    assert sum(1 for s in lanes if s.batch is not None) == 3
    assert len({s.batch for s in lanes}) == 3  # one batch each: side by side
    assert_filled([*schema_tenants, *rls])


def test_a_sigkilled_worker_mid_lane_leaves_the_lanes_to_finish_from_where_they_were(
    shared_heavy,
) -> None:
    evolution, schema_tenants, rls = shared_heavy
    celery_app.control.purge()
    first = start_worker("lanes-expand", concurrency=3)
    try:
        phases.start_phase(evolution, Phase.EXPAND)
        assert wait_for(evolution)["completed"] == "expand"
    finally:
        first.stop()
    phases.set_options(evolution, {"lanes": 2, "batch_rows": 5, "throttle_ms": 100})
    doomed = start_worker("lanes-doomed", concurrency=3)
    try:
        record = phases.start_phase(evolution, Phase.BACKFILL)
        assert record is not None
        run = record.run

        def lanes_under_way() -> bool:
            lanes = list(run.steps.filter(LANE_STEPS))
            return len(lanes) == 2 and all(int(s.progress.get("rows", 0)) >= 10 for s in lanes)

        wait_until(lanes_under_way, timeout=90)
        assert doomed.process is not None
        kill_process_tree(doomed.process.pid)
        doomed.process.wait()
        interrupted = run.steps.filter(LANE_STEPS, status=StepStatus.RUNNING)
        assert interrupted.count() == 2, "a lane finished before the kill"
        positions = {s.schema_name: s.progress["cursor"] for s in interrupted}
        rescuer = start_worker("lanes-rescuer", concurrency=3)
        try:
            state = wait_for(evolution, timeout=180)
        finally:
            rescuer.stop()
    finally:
        doomed.stop()
    assert state["completed"] == "backfill", state
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    lanes = {s.schema_name: s for s in run.steps.filter(LANE_STEPS)}
    assert {s.status for s in lanes.values()} == {StepStatus.SUCCEEDED}
    for name, cursor in positions.items():
        # Carried on from its recorded position (the lane's count went on from there).
        assert lanes[name].progress["done"] is True
        assert lanes[name].progress["cursor"] >= cursor
    assert_filled([*schema_tenants, *rls])  # no row missed
