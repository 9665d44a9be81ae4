"""advance_run migrates the first batch it hands out itself (orchestrator.advance_adopting):
the canaries go to the process that migrated the template, without a migrate_batch message."""

from __future__ import annotations

import pytest

from control_plane.fanout import batches, orchestrator, runs
from control_plane.fanout.models import RunStatus, StepStatus
from tests.migrations_sqla.support import TEST_REVISION, schema_state

pytestmark = pytest.mark.usefixtures("committed")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The migrate_batch messages the orchestrator sends, recorded instead of sent."""
    messages: list[tuple[int, int]] = []
    monkeypatch.setattr(
        runs, "enqueue_batch", lambda run_id, batch, **_kw: messages.append((run_id, batch))
    )
    return messages


def test_the_canary_batch_is_adopted_not_sent_and_the_run_finishes_from_there(
    tenants_at_base, script_location, sent
) -> None:
    tenants = tenants_at_base(4)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        canary=1,
        concurrency=2,
        batch_size=2,
        script_location=script_location,
        enqueue=False,
    )

    lane = orchestrator.advance_adopting(run.pk)

    assert lane == 1
    assert sent == []  # the canary's batch is the caller's to run, not a message
    run.refresh_from_db()
    assert run.batches_dispatched == 1
    canary = run.steps.get(canary=True)
    assert (canary.batch, canary.status) == (1, StepStatus.PENDING)
    assert run.steps.get(schema_name="template").status == StepStatus.SUCCEEDED

    # The adopted lane is an ordinary lane: it migrates the canary, then takes the rollout's
    # first chunk itself and sends the other lane as a message.
    assert batches.run_batch(run.pk, lane) == 3
    assert sent == [(run.pk, 2)]
    assert batches.run_batch(run.pk, 2) == 1

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert runs.run_counts(run)["succeeded"] == 4
    assert set(schema_state([t.schema_name for t in tenants]).values()) == {(TEST_REVISION, True)}


def test_nothing_is_adopted_when_no_tenant_waits(tenants_at_base, script_location, sent) -> None:
    tenants = tenants_at_base(2)
    slugs = [t.slug for t in tenants]
    first = runs.start_run(
        tenants=slugs, canary=0, concurrency=1, script_location=script_location, enqueue=False
    )
    lane = orchestrator.advance_adopting(first.pk)
    assert lane is not None
    batches.run_batch(first.pk, lane)
    first.refresh_from_db()
    assert first.status == RunStatus.SUCCEEDED, first.error

    again = runs.start_run(
        tenants=slugs, canary=0, concurrency=2, script_location=script_location, enqueue=False
    )
    assert orchestrator.advance_adopting(again.pk) is None  # every tenant skipped: no lane
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert again.batches_dispatched == 0
    assert sent == []
