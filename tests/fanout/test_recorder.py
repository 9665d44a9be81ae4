"""A batch's Recorder (control_plane.fanout.batches): a flush writes the buffered outcomes and
the migrated tenants' recorded revisions in one statement, whatever results they hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.utils import timezone

from control_plane.fanout.batches import Recorder, Step
from control_plane.fanout.models import MigrationRun, RunStatus, Stage, StepStatus, TenantMigration
from migrations_sqla.migrator import Outcome, Result
from tenants.models import Tenant
from tests.migrations_sqla.support import TEST_REVISION
from tests.round_trips import round_trips

pytestmark = pytest.mark.usefixtures("committed")


@pytest.fixture
def running(tenants_at_base) -> Iterator[tuple[list[TenantMigration], list[Tenant]]]:
    """Three tenants of a rolling-out run, running in lane 1."""
    tenants = tenants_at_base(3)
    run = MigrationRun.objects.create(status=RunStatus.RUNNING, stage=Stage.ROLLOUT)
    steps = [
        TenantMigration.objects.create(
            run=run,
            tenant=tenant,
            schema_name=tenant.schema_name,
            status=StepStatus.RUNNING,
            batch=1,
            revisions_before=tenant.revisions,
        )
        for tenant in tenants
    ]
    yield steps, tenants
    run.delete()


def outcome(result: Result, before: dict[str, str], after: dict[str, str]) -> Outcome:
    return Outcome(
        result=result,
        before=before,
        after=after,
        error="" if result != Result.FAILED else "boom",
        attempts=1,
        finished_at=timezone.now(),
        duration_ms=3.5,
    )


def test_a_flush_writes_outcomes_and_each_tenants_new_revisions_in_one_round_trip(
    running,
) -> None:
    steps, tenants = running
    first = {"alembic": TEST_REVISION, "django": "recorder-a"}
    second = {"alembic": TEST_REVISION, "django": "recorder-b"}  # another result, same flush
    recorder = Recorder()
    for step, tenant, result, after in (
        (steps[0], tenants[0], Result.MIGRATED, first),
        (steps[1], tenants[1], Result.MIGRATED, second),
        (steps[2], tenants[2], Result.FAILED, {}),
    ):
        recorder.add(
            Step(step.pk, tenant.pk, step.schema_name, StepStatus.RUNNING, 0, tenant.revisions),
            outcome(result, tenant.revisions, after),
        )

    connection.ensure_connection()
    with round_trips(connection.connection) as sent:
        failed = recorder.flush()
    assert len(sent) == 1, sent
    assert failed is True
    assert recorder.rows == []

    stored = {s.pk: s for s in TenantMigration.objects.filter(pk__in=[s.pk for s in steps])}
    assert [stored[s.pk].status for s in steps] == [
        StepStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
    ]
    assert [stored[s.pk].revisions_after for s in steps] == [first, second, {}]
    assert stored[steps[2].pk].error == "boom"
    assert all(stored[s.pk].attempts == 1 for s in steps)
    revisions = dict(
        Tenant.objects.filter(pk__in=[t.pk for t in tenants]).values_list("pk", "revisions")
    )
    assert revisions[tenants[0].pk] == first
    assert revisions[tenants[1].pk] == second
    assert revisions[tenants[2].pk] == tenants[2].revisions  # failed: its record stays
