"""The template and shared stage of a run has a lease like a batch lane: a second advance waits
it out, and the reaper re-sends the advance when the stage's worker died (its lease expired).
Real PostgreSQL and Redis; the advance is called in this process, and a worker that an earlier
test left running stops consuming the migrations queue meanwhile, so the queue can be counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.fanout import liveness, orchestrator, reaper, runs
from control_plane.fanout.models import RunStatus, Stage, StepStatus, TenantMigration
from tenants.cloning import TEMPLATE_SCHEMA
from tests.conftest import nobody_else_consumes

pytestmark = pytest.mark.usefixtures("committed", "nobody_consumes_migrations")


@pytest.fixture
def nobody_consumes_migrations() -> Iterator[None]:
    with nobody_else_consumes("migrations"):
        yield
        celery_app.control.purge()


def test_a_second_advance_leaves_a_platform_stage_another_task_holds() -> None:
    celery_app.control.purge()
    run = runs.start_run(enqueue=False)
    with liveness.lane_lease(run.pk, liveness.PLATFORM_LANE) as held:
        assert held
        assert orchestrator.advance(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage) == (RunStatus.RUNNING, Stage.SCHEMAS)
    assert not run.steps.exists()  # the template was left to the lease's holder
    # ... and it tries again in a moment, whatever the holder finds (one advance queued).
    assert celery_app.control.purge() == 1
    run.delete()


def test_the_reaper_advances_a_platform_stage_whose_worker_died() -> None:
    celery_app.control.purge()
    run = runs.start_run(enqueue=False)
    run.status, run.started_at = RunStatus.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    TenantMigration.objects.create(
        run=run, schema_name=TEMPLATE_SCHEMA, status=StepStatus.RUNNING, started_at=timezone.now()
    )
    with liveness.lane_lease(run.pk, liveness.PLATFORM_LANE):
        assert (run.pk, liveness.PLATFORM_LANE) not in reaper.reap_dead_lanes()  # alive
    assert (run.pk, liveness.PLATFORM_LANE) in reaper.reap_dead_lanes()  # dead: re-sent
    assert (run.pk, liveness.PLATFORM_LANE) not in reaper.reap_dead_lanes()  # once per lease
    celery_app.control.purge()
    run.delete()
