"""A lane's next claim (control_plane.fanout.claims): one statement, and nothing written when
the careful way (orchestrator.advance) has to decide."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections

from control_plane.fanout.claims import claim_next, retire
from control_plane.fanout.models import MigrationRun, RunStatus, Stage, StepStatus, TenantMigration
from tenants.models import Tenant
from tests.migrations_sqla.support import TEST_REVISION
from tests.round_trips import round_trips

pytestmark = pytest.mark.usefixtures("committed")

AFTER = {"alembic": TEST_REVISION, "django": "claims-test"}


@pytest.fixture
def lane(tenants_at_base) -> Iterator[tuple[MigrationRun, list[TenantMigration], list[Tenant]]]:
    """A rolling-out run (concurrency 2, batches of 2) whose lane 1 has just migrated its two
    tenants; three more wait, unassigned."""
    tenants = tenants_at_base(5)
    run = MigrationRun.objects.create(
        status=RunStatus.RUNNING, stage=Stage.ROLLOUT, concurrency=2, batch_size=2, target=AFTER
    )
    steps = [
        TenantMigration.objects.create(
            run=run,
            tenant=tenant,
            schema_name=tenant.schema_name,
            status=StepStatus.RUNNING if i < 2 else StepStatus.PENDING,
            batch=1 if i < 2 else None,
            revisions_before=tenant.revisions,
        )
        for i, tenant in enumerate(tenants)
    ]
    yield run, steps, tenants
    run.delete()


def outcomes(steps: list[TenantMigration]) -> list[dict[str, Any]]:
    """What a batch's Recorder holds for `steps` migrated successfully."""
    return [
        {
            "id": step.pk,
            "tenant_id": step.tenant_id,
            "revise": True,
            "status": StepStatus.SUCCEEDED,
            "attempts": 1,
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:00:01+00:00",
            "duration_ms": 12.5,
            "before": step.revisions_before,
            "after": AFTER,
            "error": "",
        }
        for step in steps
    ]


def test_claim_next_records_the_lane_and_claims_the_next_tenants_in_one_round_trip(lane) -> None:
    run, steps, tenants = lane
    connection.ensure_connection()
    with round_trips(connection.connection) as sent:
        rows = claim_next(run.pk, 1, outcomes(steps[:2]))
    assert len(sent) == 1, sent  # no BEGIN, COMMIT, or a read before the claim

    # Three wait and two lanes share them: this one takes ceil(3 / 2), in id order, as they
    # were before the claim (pending, no attempts).
    assert [row[0] for row in rows] == [steps[2].pk, steps[3].pk]
    assert [row[1:] for row in rows] == [
        (s.tenant_id, s.schema_name, StepStatus.PENDING, 0, tenants[i].revisions)
        for i, s in ((2, steps[2]), (3, steps[3]))
    ]
    assert tenants[2].revisions  # so the recorded revisions above were decoded, not text
    stored = {s.pk: s for s in run.steps.all()}
    for done in steps[:2]:
        assert stored[done.pk].status == StepStatus.SUCCEEDED
        assert stored[done.pk].revisions_after == AFTER
        assert stored[done.pk].attempts == 1
    for claimed in steps[2:4]:
        assert (stored[claimed.pk].status, stored[claimed.pk].batch) == (StepStatus.RUNNING, 1)
        assert stored[claimed.pk].started_at is not None
    assert (stored[steps[4].pk].status, stored[steps[4].pk].batch) == (StepStatus.PENDING, None)
    revisions = dict(
        Tenant.objects.filter(pk__in=[t.pk for t in tenants]).values_list("pk", "revisions")
    )
    assert revisions[tenants[0].pk] == revisions[tenants[1].pk] == AFTER
    assert revisions[tenants[2].pk] == tenants[2].revisions  # claimed, not migrated yet

    # The last one: then nothing is left, and the lane's outcomes wait for advance.
    assert [row[0] for row in claim_next(run.pk, 1, outcomes(steps[2:4]))] == [steps[4].pk]
    assert claim_next(run.pk, 1, outcomes(steps[4:])) == []
    assert TenantMigration.objects.get(pk=steps[4].pk).status == StepStatus.RUNNING


@pytest.mark.parametrize("case", ["canary stage", "run paused", "shared lane waiting"])
def test_claim_next_writes_nothing_when_advance_must_decide(lane, case) -> None:
    run, steps, tenants = lane
    if case == "canary stage":
        MigrationRun.objects.filter(pk=run.pk).update(stage=Stage.CANARY)
    elif case == "run paused":
        MigrationRun.objects.filter(pk=run.pk).update(status=RunStatus.PAUSED)
    else:
        TenantMigration.objects.create(run=run, schema_name="shared/1", status=StepStatus.PENDING)

    assert claim_next(run.pk, 1, outcomes(steps[:2])) == []

    stored = dict(run.steps.filter(tenant__isnull=False).values_list("pk", "status"))
    assert [stored[s.pk] for s in steps] == [StepStatus.RUNNING] * 2 + [StepStatus.PENDING] * 3
    assert set(run.steps.filter(tenant__isnull=False).values_list("batch", flat=True)) == {1, None}
    assert Tenant.objects.get(pk=tenants[0].pk).revisions == tenants[0].revisions


def lane_two_takes(steps: list[TenantMigration], status: str = StepStatus.RUNNING) -> None:
    """The three waiting tenants are lane 2's, in `status`."""
    TenantMigration.objects.filter(pk__in=[s.pk for s in steps[2:]]).update(batch=2, status=status)


def test_a_lane_retires_with_its_outcomes_while_another_lane_has_tenants(lane) -> None:
    run, steps, tenants = lane
    lane_two_takes(steps)
    connection.ensure_connection()
    with round_trips(connection.connection) as sent:
        assert retire(run.pk, 1, outcomes(steps[:2])) is True
    assert len(sent) == 1, sent
    stored = dict(run.steps.values_list("pk", "status"))
    assert [stored[s.pk] for s in steps] == [StepStatus.SUCCEEDED] * 2 + [StepStatus.RUNNING] * 3
    assert Tenant.objects.get(pk=tenants[0].pk).revisions == AFTER


@pytest.mark.parametrize(
    "case", ["last lane", "tenants wait", "own tenant unfinished", "canary stage", "run paused"]
)
def test_a_lane_does_not_retire_when_advance_must_decide(lane, case) -> None:
    """The last lane (its advance settles the run), tenants left to dispatch, a tenant of its
    own not among its outcomes, a stage or status advance changes: nothing is written."""
    run, steps, tenants = lane
    lane_two_takes(steps, StepStatus.SUCCEEDED if case == "last lane" else StepStatus.RUNNING)
    mine = outcomes(steps[:2])
    if case == "tenants wait":
        TenantMigration.objects.filter(pk=steps[4].pk).update(batch=None, status=StepStatus.PENDING)
    elif case == "own tenant unfinished":
        mine = mine[:1]
    elif case == "canary stage":
        MigrationRun.objects.filter(pk=run.pk).update(stage=Stage.CANARY)
    elif case == "run paused":
        MigrationRun.objects.filter(pk=run.pk).update(status=RunStatus.PAUSED)

    assert retire(run.pk, 1, mine) is False

    stored = dict(run.steps.values_list("pk", "status"))
    assert [stored[s.pk] for s in steps[:2]] == [StepStatus.RUNNING] * 2
    assert Tenant.objects.get(pk=tenants[0].pk).revisions == tenants[0].revisions


def test_a_lane_decides_to_retire_on_what_was_committed_before_it_got_the_run_lock(lane) -> None:
    """Two lanes ending together: lane 2 holds the run row and finishes while lane 1 waits for
    it. Lane 1 must see lane 2 finished (and not retire: it is the last, its advance settles the
    run); deciding on a snapshot taken before the wait, both would retire."""
    run, steps, _tenants = lane
    lane_two_takes(steps)
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    decided: dict[str, bool] = {}

    def lane_one() -> None:
        try:
            decided["retired"] = retire(run.pk, 1, outcomes(steps[:2]))
        finally:
            connection.close()

    try:
        with holder.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {MigrationRun._meta.db_table} WHERE id = %s FOR UPDATE", [run.pk]
            )
        waiting = threading.Thread(target=lane_one)
        waiting.start()
        time.sleep(0.5)  # lane 1 waits for the run row
        assert waiting.is_alive()
        with holder.cursor() as cursor:
            cursor.execute(
                f"UPDATE {TenantMigration._meta.db_table} SET status = %s WHERE id = ANY(%s)",
                [StepStatus.SUCCEEDED, [s.pk for s in steps[2:]]],
            )
        holder.commit()
        waiting.join(timeout=30)
    finally:
        holder.close()
    assert decided == {"retired": False}
    stored = dict(run.steps.values_list("pk", "status"))
    assert [stored[s.pk] for s in steps[:2]] == [StepStatus.RUNNING] * 2
