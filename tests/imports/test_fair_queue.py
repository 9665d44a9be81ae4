"""Fair import queue: one tenant's backlog of large imports does not hold another tenant's small
import behind it (control_plane.worker.fairness), with the session's real worker (2 processes)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Max
from django.test import override_settings

from control_plane.imports.models import ImportJob, ImportStatus
from control_plane.worker import fairness
from tenants.models import Isolation
from tests.imports.conftest import (
    ImportTenant,
    csv_bytes,
    discard_with_uploads,
    generated_rows,
    tenant_with_project,
    write_generated_csv,
)

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("committed")]

LARGE_ROWS = 15_000  # a second or more each here: long enough to queue behind
BACKLOG = 3


@pytest.fixture
def two_tenants() -> Iterator[tuple[ImportTenant, ImportTenant]]:
    a, b = tenant_with_project(Isolation.SCHEMA), tenant_with_project(Isolation.SCHEMA)
    yield a, b
    discard_with_uploads(a)
    discard_with_uploads(b)


def _when(job: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(job[field].replace("Z", "+00:00"))


def test_a_tenants_backlog_runs_one_at_a_time_and_another_tenants_import_passes_it(
    worker: Any, two_tenants: tuple[ImportTenant, ImportTenant], tmp_path: Path
) -> None:
    a, b = two_tenants
    large = write_generated_csv(tmp_path / "large.csv", LARGE_ROWS, a.project).read_bytes()
    backlog = []
    for _ in range(BACKLOG):
        response = a.upload(large)
        assert response.status_code == 202, response.content
        backlog.append(response.json()["id"])
    small = b.upload(csv_bytes(generated_rows(50, b.project)))
    assert small.status_code == 202, small.content

    b_job = b.wait(small.json()["id"], timeout=180)
    a_jobs = sorted(
        (a.wait(job_id, timeout=300) for job_id in backlog), key=lambda j: j["started_at"]
    )

    assert b_job["status"] == "succeeded"
    assert {job["status"] for job in a_jobs} == {"succeeded"}
    # Tenant A never had two imports running at once (IMPORTS_PER_TENANT = 1)...
    for earlier, later in itertools.pairwise(a_jobs):
        assert _when(later, "started_at") >= _when(earlier, "finished_at")
    # ...so the second process was free for B: done before A's second import finished, where a
    # plain FIFO queue would have run all of A's backlog ahead of it on both processes.
    assert _when(b_job, "finished_at") < _when(a_jobs[1], "finished_at")
    assert fairness.holders("imports", a.fixture.tenant.pk) == []


def test_a_slot_held_by_a_finished_job_is_dropped_when_it_blocks_another(
    two_tenants: tuple[ImportTenant, ImportTenant], unique: str
) -> None:
    a, _ = two_tenants
    tenant = a.fixture.tenant
    number = (ImportJob.objects.filter(tenant=tenant).aggregate(top=Max("number"))["top"] or 0) + 1
    finished = ImportJob.objects.create(
        tenant=tenant,
        number=number,
        status=ImportStatus.SUCCEEDED,
        file_path="/nonexistent",
        errors_path="",
    )
    with override_settings(RATE_LIMIT_KEY_PREFIX=f"rl-{unique}"):
        # A worker died between taking the slot and releasing it: the member stays behind.
        assert fairness.take("imports", tenant.pk, str(finished.pk), 1)
        from control_plane.imports.tasks import _active_jobs

        assert not fairness.take("imports", tenant.pk, "next", 1)  # blocked without the check
        assert fairness.take("imports", tenant.pk, "next", 1, _active_jobs)
        assert fairness.holders("imports", tenant.pk) == ["next"]


def test_the_cheap_bounce_waits_only_behind_other_holders_and_lets_a_holder_check_through(
    unique: str,
) -> None:
    """must_wait: the read-only look a task takes before its lease. It answers "wait" only while
    the owner's slots are others' and no check of the holders is due (one per owner per
    FAIR_QUEUE_HOLDER_CHECK_SECONDS goes on to `take`, which asks the database)."""
    owner = f"owner-{unique}"
    with override_settings(
        RATE_LIMIT_KEY_PREFIX=f"rl-{unique}", FAIR_QUEUE_HOLDER_CHECK_SECONDS=60
    ):
        assert not fairness.must_wait("imports", owner, "2", 1)  # no holder: go on
        assert fairness.take("imports", owner, "1", 1)
        assert not fairness.must_wait("imports", owner, "2", 1)  # the holder check is due once
        assert fairness.must_wait("imports", owner, "2", 1)  # then: wait, nothing taken
        assert fairness.must_wait("imports", owner, "3", 1)
        assert not fairness.must_wait("imports", owner, "1", 1)  # the holder's own redelivery
        assert not fairness.must_wait("imports", owner, "2", 2)  # a free slot under a cap of 2
        assert not fairness.must_wait("imports", owner, "2", 0)  # no cap
        assert fairness.holders("imports", owner) == ["1"]
        fairness.release("imports", owner, "1")
        assert not fairness.must_wait("imports", owner, "2", 1)
