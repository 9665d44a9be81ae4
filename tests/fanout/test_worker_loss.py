"""A worker SIGKILLed mid-run: no tenant half-migrated, and the run still ends with every tenant
at the target exactly once.

The realistic case is chosen: the whole worker (main process and its pool children) dies at
once, as when a machine or container is lost. Its unacknowledged batch messages stay in Redis
and are restored to the queue after the visibility timeout (5 s here, through
CELERY_VISIBILITY_TIMEOUT; 3600 s by default) by the worker that replaces it. Kombu's Redis
transport sweeps unacknowledged messages on every tenth 10-second tick by default; the test
workers sweep every second (tests/fanout/worker_settings.py), as production should with a short
visibility timeout.
"""

from __future__ import annotations

import time

import pytest

from control_plane.celery import app as celery_app
from control_plane.fanout import liveness, reaper, runs
from control_plane.fanout.models import RunStatus, StepStatus
from control_plane.worker import leases
from tests.fanout.conftest import start_worker
from tests.fanout.support import kill_process_tree, wait_for_run, wait_until
from tests.migrations_sqla.support import BASE_REVISION, TEST_REVISION, schema_state

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("committed")]


def test_a_worker_killed_mid_run_leaves_no_tenant_half_migrated_and_the_run_finishes(
    tenants_at_base, slow_script_location
) -> None:
    celery_app.control.purge()
    tenants = tenants_at_base(100)
    schemas = [t.schema_name for t in tenants]
    doomed = start_worker("doomed")
    try:
        run = runs.start_run(
            tenants=[t.slug for t in tenants],
            canary=0,
            concurrency=2,
            batch_size=20,
            script_location=slow_script_location,
        )
        wait_until(lambda: runs.run_counts(run)["succeeded"] >= 10, timeout=60)
        assert doomed.process is not None
        kill_process_tree(doomed.process.pid)
        doomed.process.wait()
        counts = runs.run_counts(run)
        assert counts["succeeded"] < 100, "the run finished before the kill"
        # Right after the kill every schema is wholly at one revision or the other.
        assert set(schema_state(schemas).values()) <= {
            (BASE_REVISION, False),
            (TEST_REVISION, True),
        }
        interrupted = set(
            run.steps.filter(status=StepStatus.RUNNING).values_list("schema_name", flat=True)
        )
        assert interrupted  # tenants of the batches in flight when the worker died
        # As its leases know, the worker died this instant: each lane's lease lives one more
        # lease length, so the redeliveries below come before it lapses (the worker's messages
        # were delivered more than the visibility timeout ago). A fast replacement meets this:
        # a delivery that finds its lane held must look again, not drop the lane.
        lanes = run.steps.filter(status=StepStatus.RUNNING, batch__isnull=False)
        for batch in {b for b in lanes.values_list("batch", flat=True) if b is not None}:
            leases.client().set(
                liveness.lease_key(run.pk, batch), "killed", px=int(leases.lease_seconds() * 1000)
            )

        rescuer = start_worker("rescuer")
        try:
            run = wait_for_run(run.pk, timeout=90)
        finally:
            rescuer.stop()
    finally:
        doomed.stop()

    assert run.status == RunStatus.SUCCEEDED, run.error
    final = runs.run_counts(run)
    assert final["succeeded"] == 100
    assert final["failed"] == 0
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
    steps = run.steps.filter(tenant__isnull=False)
    assert steps.count() == 100  # one row per tenant
    assert not steps.exclude(
        error=""
    ).exists()  # nothing migrated twice (it would fail: column exists)


def test_a_killed_workers_lanes_are_sent_again_within_seconds_by_their_expired_lease(
    tenants_at_base, slow_script_location
) -> None:
    """The broker's own redelivery is out of the picture (a visibility timeout of an hour, the
    production default): the lane's lease expires and the reaper, as beat runs it every few
    seconds, sends the lane again; the run goes on within seconds, not the stuck-run minutes."""
    celery_app.control.purge()
    tenants = tenants_at_base(100)
    schemas = [t.schema_name for t in tenants]
    doomed = start_worker("doomed", visibility_timeout="3600")
    rescuer = None
    try:
        run = runs.start_run(
            tenants=[t.slug for t in tenants],
            canary=0,
            concurrency=2,
            batch_size=20,
            script_location=slow_script_location,
        )
        wait_until(lambda: runs.run_counts(run)["succeeded"] >= 10, timeout=60)
        assert doomed.process is not None
        kill_process_tree(doomed.process.pid)
        doomed.process.wait()
        killed_at = time.monotonic()
        done_at_kill = runs.run_counts(run)["succeeded"]
        assert done_at_kill < 100, "the run finished before the kill"
        rescuer = start_worker("rescuer", visibility_timeout="3600")

        def moving() -> bool:
            reaper.reap_dead_lanes()  # what beat sends every 2 s
            return runs.run_counts(run)["succeeded"] > done_at_kill

        wait_until(moving, timeout=60, interval=0.5)
        recovery = time.monotonic() - killed_at
        print(f"run moving again {recovery:.1f}s after the worker was killed")
        assert recovery < liveness.LEASE_S + 15

        def finished() -> bool:
            reaper.reap_dead_lanes()  # each dead lane is sent once its lease has expired
            run.refresh_from_db()
            return run.is_finished

        wait_until(finished, timeout=300, interval=0.5)
        run = wait_for_run(run.pk, timeout=30)
    finally:
        if rescuer is not None:
            rescuer.stop()
        doomed.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert runs.run_counts(run)["succeeded"] == 100
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
    assert not run.steps.filter(tenant__isnull=False).exclude(error="").exists()
