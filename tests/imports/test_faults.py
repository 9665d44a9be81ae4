"""Faults mid-import, with real worker processes and a real PostgreSQL:

- the worker's pool child killed with SIGKILL: reject_on_worker_lost requeues the message at
  once, the job runs again from scratch and ends with exactly the file's rows;
- the whole worker killed with SIGKILL (main process and child): the message stays unacked in
  Redis until its visibility timeout (CELERY_VISIBILITY_TIMEOUT, 5 s for these workers, 3600 s
  by default); then a live worker's periodic sweep (every CELERY_UNACKED_RESTORE_INTERVAL
  seconds) puts it back and the new worker runs the job again;
- PostgreSQL killing the import's connection (pg_terminate_backend on just that backend: what a
  server restart does to the session, without disturbing other tests sharing the server): the
  transaction is gone, the job is retried, or fails with a clear reason once its attempts are
  spent. Nothing is ever half-written.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tenants.binding import binding_for
from tests.conftest import WorkerProcess
from tests.imports.conftest import ImportTenant, write_generated_csv
from tests.superuser import superuser_connection

pytestmark = pytest.mark.worker

ROWS = 60_000


@pytest.fixture
def own_workers(
    monkeypatch: pytest.MonkeyPatch, no_import_consumers: None
) -> Iterator[list[WorkerProcess]]:
    """Workers of this test alone: every other worker on the broker stops consuming imports."""
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "5")
    monkeypatch.setenv("CELERY_UNACKED_RESTORE_INTERVAL", "1")
    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("IMPORT_PROGRESS_EVERY", "5000")
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(workers: list[WorkerProcess]) -> WorkerProcess:
    worker = WorkerProcess("imports-fault", queues="imports", concurrency=1).start()
    workers.append(worker)
    return worker


def big_import(tenant: ImportTenant, tmp_path: Path) -> dict[str, Any]:
    path = write_generated_csv(tmp_path / "big.csv", ROWS, "P1")
    response = tenant.upload(path.read_bytes())
    assert response.status_code == 202, response.content
    return response.json()


def wait_for_phase(tenant: ImportTenant, job_id: int, phase: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while tenant.job(job_id)["phase"] != phase:
        assert time.monotonic() < deadline, tenant.job(job_id)
        time.sleep(0.05)


def executing_pid(tenant: ImportTenant, job_id: int) -> int:
    """The process running the job (the pool child), as the task recorded it."""
    return int(tenant.stored(job_id).worker.rsplit(":", 1)[1])


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def assert_exactly_the_files_rows(tenant: ImportTenant, job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job
    assert (job["rows_read"], job["inserted"], job["updated"]) == (ROWS, ROWS, 0)
    count, distinct = tenant.sql("SELECT count(*), count(DISTINCT external_id) FROM tenant.tasks")[
        0
    ]
    assert (count, distinct) == (ROWS, ROWS)
    history = tenant.sql(
        "SELECT count(*), count(DISTINCT row_id) FROM tenant.tasks_history WHERE operation = 'insert'"
    )[0]
    assert tuple(history) == (ROWS, ROWS)


def test_pool_child_killed_mid_write_is_retried_to_exactly_the_files_rows(
    schema_tenant: ImportTenant, own_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    start_worker(own_workers)
    with writes_held(schema_tenant):  # the write cannot end before the kill
        created = big_import(schema_tenant, tmp_path)
        wait_for_phase(schema_tenant, created["id"], "writing")
        os.kill(executing_pid(schema_tenant, created["id"]), signal.SIGKILL)

    job = schema_tenant.wait(created["id"], timeout=300)
    assert job["attempts"] == 2
    assert_exactly_the_files_rows(schema_tenant, job)


def test_whole_worker_killed_mid_load_is_redelivered_to_a_new_worker(
    schema_tenant: ImportTenant, own_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    first = start_worker(own_workers)
    with writes_held(schema_tenant):  # the job cannot end before the kill
        created = big_import(schema_tenant, tmp_path)
        wait_for_phase(schema_tenant, created["id"], "writing")
        assert first.process is not None
        main = first.process.pid
        for pid in [*children_of(main), main]:
            os.kill(pid, signal.SIGKILL)
        first.process.wait()
    assert schema_tenant.job(created["id"])["status"] == "running"  # nobody is running it

    start_worker(own_workers)  # restores the message once it is 5 s old, then runs it
    job = schema_tenant.wait(created["id"], timeout=300)
    assert job["attempts"] == 2
    assert_exactly_the_files_rows(schema_tenant, job)


def terminate_import_backend(timeout: float = 60) -> None:
    """pg_terminate_backend of the connection running an import, as a superuser; returns once
    that backend is gone, so a later call can only find the next attempt's."""
    database = settings.DATABASES["default"]["NAME"]
    deadline = time.monotonic() + timeout
    with superuser_connection() as conn:
        while True:
            assert time.monotonic() < deadline, "no import backend to terminate"
            pids = [
                pid
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid() AND state = 'active'"
                    " AND query LIKE '%%import_staging%%'",
                    [database],
                ).fetchall()
            ]
            if pids:
                break
            time.sleep(0.05)
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, f"backends {pids} did not exit"
            time.sleep(0.05)


@contextmanager
def writes_held(tenant: ImportTenant) -> Iterator[None]:
    """Hold SHARE on the tenant's tasks table: reads go on, an import's write waits (its
    backend active, on a statement reading import_staging) until the block ends. However fast
    the import, an attempt cannot finish before the test has ended it."""
    schema = binding_for(tenant.fixture.tenant).schema
    database = settings.DATABASES["default"]["NAME"]
    with superuser_connection(database) as conn, conn.transaction():
        conn.execute(f'LOCK TABLE "{schema}".tasks IN SHARE MODE')
        yield


def test_database_connection_lost_mid_write_is_retried_to_exactly_the_files_rows(
    schema_tenant: ImportTenant, own_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    start_worker(own_workers)
    with writes_held(schema_tenant):
        created = big_import(schema_tenant, tmp_path)
        terminate_import_backend()

    job = schema_tenant.wait(created["id"], until={"queued", "succeeded", "failed"}, timeout=120)
    if job["status"] == "queued":  # between the attempts: the reason is on the job
        assert "Attempt 1 lost its database connection" in job["error"]
        assert "nothing was written, retrying" in job["error"]
        assert schema_tenant.sql("SELECT count(*) FROM tenant.tasks")[0][0] == 0
    job = schema_tenant.wait(created["id"], timeout=300)
    assert job["attempts"] == 2
    assert_exactly_the_files_rows(schema_tenant, job)


def test_database_connection_lost_on_every_attempt_fails_with_the_reason(
    schema_tenant: ImportTenant, own_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    start_worker(own_workers)
    with writes_held(schema_tenant):
        created = big_import(schema_tenant, tmp_path)
        for _attempt in range(2):  # IMPORT_MAX_ATTEMPTS of these workers
            terminate_import_backend()

    job = schema_tenant.wait(created["id"], timeout=120)
    assert job["status"] == "failed", job
    assert job["attempts"] == 2
    assert "Attempt 2 lost its database connection" in job["error"]
    assert "gave up, nothing was written" in job["error"]
    assert schema_tenant.sql("SELECT count(*) FROM tenant.tasks")[0][0] == 0
