"""Progress while an import writes its rows: the write goes batch by batch (a range of staged
lines each), and the job's progress moves after every batch, in the API's job resource and on
the admin's job page, on a real worker.

The test holds the write still halfway, deterministically: it inserts, in a transaction it keeps
open, a task with the external id of a row of the file's sixth batch. The import's INSERT of that
batch waits on the uncommitted key; meanwhile the job shows the first five batches' progress.
Once the test commits, the batch's plain INSERT meets the key (a concurrent writer's), and the
batch and the rest go again as upserts: that row updates the test's task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from django.contrib.auth.models import User
from django.test import Client

from taskflow.imports.staging import MAX_LINE, Staged
from tenants.binding import binding_for, tenant_session
from tests.conftest import WorkerProcess
from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

ROWS = 1_000
BATCH = 100
HELD = 550  # a row of the sixth batch


@pytest.fixture
def batching_worker(no_import_consumers: None) -> Iterator[WorkerProcess]:
    """A worker of this test alone, writing batches of BATCH staged rows."""
    worker = WorkerProcess(
        "imports-progress",
        queues="imports",
        concurrency=1,
        env={"IMPORT_WRITE_BATCH_ROWS": str(BATCH)},
    ).start()
    yield worker
    worker.stop()


def wait_until(
    tenant: ImportTenant, job_id: int, done: Any, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not done(job := tenant.job(job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_progress_moves_batch_by_batch_while_rows_are_written(
    schema_tenant: ImportTenant,
    batching_worker: WorkerProcess,
    client: Client,
    unique: str,
) -> None:
    rows = generated_rows(ROWS, "P1")
    held = rows[HELD][0]
    binding = binding_for(schema_tenant.fixture.tenant)
    with tenant_session(binding) as session:
        session.execute(
            sa.text(
                f"INSERT INTO {binding.schema}.tasks (tenant_id, project_id, external_id, title)"
                f" SELECT tenant_id, id, :ext, 'Written meanwhile' FROM {binding.schema}.projects"
                " WHERE key = 'P1'"
            ),
            {"ext": held},
        )
        created = schema_tenant.upload(csv_bytes(rows))
        assert created.status_code == 202, created.content
        job_id = created.json()["id"]

        job = wait_until(
            schema_tenant, job_id, lambda j: j["phase"] == "writing" and j["progress"] > 50
        )
        # Held on the sixth batch: the first five are reported, the job is far from done.
        assert job["status"] == "running"
        assert 50 < job["progress"] < 98, job
        assert job["rows_read"] == ROWS

        operator = User.objects.create_superuser(f"op_{unique}", f"op_{unique}@example.com", "x")
        client.force_login(operator)
        page = client.get(
            f"/admin/imports/importjob/{schema_tenant.stored(job_id).pk}/change/",
            HTTP_HOST="localhost",
        ).content.decode()
        assert f"{schema_tenant.stored(job_id).progress:.0f}%" in page
        assert "writing" in page
        # the block's exit commits the held task: the import goes on

    job = schema_tenant.wait(job_id)
    assert job["status"] == "succeeded", job
    assert (job["inserted"], job["updated"], job["rejected"]) == (ROWS - 1, 1, 0)
    assert job["progress"] == 100.0
    title, version = schema_tenant.sql(
        "SELECT title, version FROM tenant.tasks WHERE external_id = :ext", ext=held
    )[0]
    assert (title, version) == (rows[HELD][2], 2)
    assert schema_tenant.sql("SELECT count(*) FROM tenant.tasks")[0][0] == ROWS


@pytest.mark.parametrize(
    ("rows", "ends", "expected"),
    [
        (0, [], [(0, MAX_LINE, 0)]),
        (5, [], [(0, MAX_LINE, 5)]),
        (20, [11, 23], [(0, 11, 10), (11, 23, 20)]),
        (25, [11, 23], [(0, 11, 10), (11, 23, 20), (23, MAX_LINE, 25)]),
    ],
)
def test_batches_cover_every_staged_line_once(
    rows: int, ends: list[int], expected: list[tuple[int, int, int]]
) -> None:
    assert Staged(rows=rows, batch_rows=10, batch_ends=ends).batches() == expected
