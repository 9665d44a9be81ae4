"""A delivery of a lane whose lease is held cannot tell a live holder from one killed an instant
ago (the broker may deliver a dead worker's message again before its lease lapses), so it sends
the lane once more, one lease length later, and only once. Real PostgreSQL and Redis; the
message is read back from the broker, which no worker consumes meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.fanout import batches, liveness, runs
from control_plane.fanout.models import StepStatus, TenantMigration
from tests.conftest import nobody_else_consumes

pytestmark = pytest.mark.usefixtures("committed", "nobody_consumes_migrations")

LANE = 1


@pytest.fixture
def nobody_consumes_migrations() -> Iterator[None]:
    celery_app.control.purge()
    with nobody_else_consumes("migrations"):
        yield
        celery_app.control.purge()


def queued_batches() -> list[tuple[str, list[Any], dict[str, Any], str | None]]:
    """The messages waiting in the migrations queue: (task, args, kwargs, eta), taken off it."""
    found = []
    with celery_app.connection_for_read() as conn:
        queue = conn.SimpleQueue("migrations")
        try:
            while True:
                try:
                    message = queue.get(timeout=0.5)
                except queue.Empty:
                    break
                args, kwargs, _ = message.payload
                found.append((message.headers["task"], args, kwargs, message.headers.get("eta")))
                message.ack()
        finally:
            queue.close()
    return found


def test_a_held_lane_with_running_tenants_is_sent_once_more_a_lease_length_later() -> None:
    run = runs.start_run(enqueue=False)
    step = TenantMigration.objects.create(
        run=run,
        schema_name="t_look_again",
        status=StepStatus.RUNNING,
        batch=LANE,
        started_at=timezone.now(),
    )
    try:
        with liveness.lane_lease(run.pk, LANE) as held:
            assert held  # the holder: alive here, or killed a moment ago, to the delivery
            assert batches.run_batch(run.pk, LANE) == 0  # nothing migrated beside the holder
            [(task, args, kwargs, eta)] = queued_batches()
            assert (task, args) == (runs.BATCH_TASK, [run.pk, LANE])
            assert kwargs == {"force": False, "looked_again": True}
            assert eta is not None  # a lease length from now, when a dead holder's lease is gone

            # The second look finds the lease still held: the holder is alive; no third look.
            assert batches.run_batch(run.pk, LANE, looked_again=True) == 0
            assert queued_batches() == []

            # A lane with nothing left to migrate is not looked at again either.
            step.status = StepStatus.SUCCEEDED
            step.save(update_fields=["status"])
            assert batches.run_batch(run.pk, LANE) == 0
            assert queued_batches() == []
    finally:
        run.delete()
