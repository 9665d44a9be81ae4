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

import pytest

from control_plane.celery import app as celery_app
from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus, StepStatus
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
