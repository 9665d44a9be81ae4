"""The stuck-run reaper: runs whose messages the broker lost are sent again and finish.

Real PostgreSQL, Redis and Celery worker processes. A lost message is made the way it happens:
the run's messages are queued while no worker consumes the migrations queue, then purged.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.fanout import orchestrator, reaper, runs
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus
from tests.conftest import nobody_else_consumes
from tests.fanout.conftest import start_worker
from tests.fanout.support import wait_for_run
from tests.migrations_sqla.support import TEST_REVISION, schema_state

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("committed")]

LONG_AGO = timedelta(hours=1)


def age(run: MigrationRun, by: timedelta) -> None:
    """Move everything the run has done `by` into the past."""
    then = timezone.now() - by
    MigrationRun.objects.filter(pk=run.pk).update(
        created_at=then, started_at=then if run.started_at or run.steps.exists() else None
    )
    run.steps.update(started_at=then)
    run.steps.exclude(finished_at=None).update(finished_at=then)


def test_a_run_whose_first_message_was_lost_is_nudged_and_finishes(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(4)
    run = runs.start_run(
        tenants=[t.slug for t in tenants], script_location=script_location, enqueue=False
    )
    assert run.pk not in reaper.reap_stuck_runs()  # just created: not stuck yet
    age(run, LONG_AGO)

    assert run.pk in reaper.reap_stuck_runs()
    assert run.pk not in reaper.reap_stuck_runs()  # nudged just now: left alone for a while
    worker = start_worker("reaper-first")
    try:
        run = wait_for_run(run.pk)
    finally:
        worker.stop()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.nudged_at is not None
    states = schema_state([t.schema_name for t in tenants])
    assert set(states.values()) == {(TEST_REVISION, True)}


def test_batches_lost_mid_run_are_sent_again_and_every_tenant_is_migrated(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(6)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        canary=0,
        concurrency=2,
        batch_size=2,
        script_location=script_location,
        enqueue=False,
    )
    with nobody_else_consumes("migrations"):
        celery_app.control.purge()
        # The run's first step, in-process: the template migrates, two batches are queued ...
        orchestrator.advance(run.pk)
        in_flight = set(
            run.steps.filter(batch__isnull=False, status=StepStatus.PENDING).values_list(
                "batch", flat=True
            )
        )
        assert in_flight == {1, 2}
        # ... and lost before any worker took them.
        celery_app.control.purge()
        age(run, LONG_AGO)
        assert run.pk in reaper.reap_stuck_runs()
    worker = start_worker("reaper-batches")
    try:
        run = wait_for_run(run.pk)
    finally:
        worker.stop()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert runs.run_counts(run)["succeeded"] == 6
    states = schema_state([t.schema_name for t in tenants])
    assert set(states.values()) == {(TEST_REVISION, True)}


def test_a_slow_migration_is_not_mistaken_for_a_stuck_run(tenants_at_base, script_location) -> None:
    tenants = tenants_at_base(1)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        statement_timeout="1h",
        script_location=script_location,
        enqueue=False,
    )
    age(run, LONG_AGO)  # quiet for an hour, but one statement may take an hour
    with nobody_else_consumes("migrations"):
        try:
            assert run.pk not in reaper.reap_stuck_runs()
            assert run.pk in reaper.reap_stuck_runs(now=timezone.now() + LONG_AGO)
        finally:
            runs.cancel_run(run)
            celery_app.control.purge()


@pytest.mark.parametrize(
    ("value", "seconds"), [("500ms", 0.5), ("5s", 5), ("5min", 300), ("1h", 3600), ("250", 0.25)]
)
def test_timeouts_read_as_postgresql_reads_them(value: str, seconds: float) -> None:
    assert reaper.timeout_seconds(value) == seconds
