"""A lane's next claim (control_plane.fanout.claims): one statement, and nothing written when
the careful way (orchestrator.advance) has to decide."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from control_plane.fanout.claims import claim_next
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
