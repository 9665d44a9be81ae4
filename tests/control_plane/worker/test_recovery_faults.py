"""Stranded jobs recovered by a real beat and real workers, on a private Redis broker:

- the broker restarted without persistence while an import and an onboarding wait in its queues
  (their messages are gone): beat's sweep finds both without a message or a worker and sends
  them again; both finish;
- the whole worker SIGKILLed mid-import, with the production visibility timeout (an hour): the
  job's lease expires, beat sends it again, a new worker runs it from scratch; the tenant ends
  with exactly the file's rows, once;
- Redis shut down and started again while a worker (one process busy, one waiting on BRPOP) runs
  an import: the worker stays up, reconnects, finishes it once and consumes the next one.

Beat sweeps every second and leases last 2 s here (RECOVERY_INTERVAL_SECONDS, LEASE_SECONDS;
5 s each by default), so each recovery takes seconds; the assertion is the issue's bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from control_plane.celery import app as celery_app
from control_plane.tenancy.onboarding import submit_onboarding
from tenants.models import Isolation, Tenant, TenantStatus
from tenants.provisioning import drop_storage
from tests.conftest import ROOT, WorkerProcess
from tests.imports.conftest import (
    ImportTenant,
    csv_bytes,
    discard_with_uploads,
    generated_rows,
    tenant_with_project,
)
from tests.imports.test_faults import (
    ROWS,
    assert_exactly_the_files_rows,
    big_import,
    wait_for_phase,
)
from tests.processes import kill_process_tree, start_redis, stop_process

pytestmark = pytest.mark.worker

SMALL = 2_000  # rows of the import the broker loses: it need not run long, only be queued
BOUND_S = 60.0  # the target: a stranded job finishes within a minute of the fault


class PrivateBroker:
    """A private redis-server as this process's and its children's broker; restartable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process, self.url = start_redis(folder)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def restart_losing_everything(self) -> None:
        stop_process(self.process)
        self.process, _ = start_redis(self.folder, port=self.port)

    def stop(self) -> None:
        stop_process(self.process)


def use_broker(url: str) -> None:
    """Point this process's Celery app at `url` (its pools are made again on first use)."""
    celery_app.conf.broker_url = url  # type: ignore[misc]
    celery_app._pool = None  # type: ignore[attr-defined]
    celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBroker]:
    private = PrivateBroker(tmp_path)
    previous = str(celery_app.conf.broker_url)
    monkeypatch.setenv("CELERY_BROKER_URL", private.url)
    monkeypatch.setenv("LEASE_SECONDS", "2")
    monkeypatch.setenv("RECOVERY_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("CELERY_UNACKED_RESTORE_INTERVAL", "1")
    monkeypatch.setenv("IMPORT_PROGRESS_EVERY", "5000")
    use_broker(private.url)
    yield private
    use_broker(previous)
    private.stop()


@pytest.fixture
def schema_tenant(committed: None) -> Iterator[ImportTenant]:
    tenant = tenant_with_project(Isolation.SCHEMA)
    yield tenant
    discard_with_uploads(tenant)


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess | subprocess.Popen[bytes]]]:
    started: list[WorkerProcess | subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        if isinstance(process, WorkerProcess):
            process.stop()
        else:
            stop_process(process)


def start_beat(folder: Path) -> subprocess.Popen[bytes]:
    log = (ROOT / ".data" / "beat-recovery-test.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "control_plane", "beat", "-l", "info",
         "-s", str(folder / "beat-schedule")],
        cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_jobs_whose_messages_a_broker_restart_lost_are_sent_again_and_finish(
    broker: PrivateBroker, processes: list, schema_tenant: ImportTenant, tmp_path: Path, unique: str
) -> None:
    response = schema_tenant.upload(csv_bytes(generated_rows(SMALL, "P1")))
    assert response.status_code == 202, response.content
    created = response.json()
    connection.set_schema_to_public()  # type: ignore[attr-defined]  # the upload left it on the tenant
    requested = submit_onboarding(
        fields={
            "name": "Stranded", "slug": f"s{unique}", "domain": f"s{unique}.localhost",
            "isolation": "rls", "owner_email": f"s{unique}@example.com",
        }
    )  # fmt: skip
    tenant = requested.onboarding.tenant
    try:
        broker.restart_losing_everything()  # both messages gone, nobody ran them
        processes.append(start_beat(tmp_path))
        processes.append(WorkerProcess("recovery", queues="default,imports").start())
        restarted = time.monotonic()

        def onboarded() -> bool:
            tenant.refresh_from_db()
            return tenant.status == TenantStatus.ACTIVE

        wait_until(onboarded, BOUND_S, "the onboarding")
        job = schema_tenant.wait(created["id"], timeout=BOUND_S - (time.monotonic() - restarted))
        print(f"both stranded jobs finished {time.monotonic() - restarted:.1f}s after the restart")
        assert (job["status"], job["inserted"], job["attempts"]) == ("succeeded", SMALL, 1)
        assert schema_tenant.sql("SELECT count(*) FROM tenant.tasks")[0][0] == SMALL
        assert requested.onboarding.__class__.objects.get(pk=requested.onboarding.pk).attempts == 1
    finally:
        tenant.refresh_from_db()
        drop_storage(tenant)
        Tenant.objects.filter(pk=tenant.pk).delete()


def test_a_whole_worker_killed_mid_import_is_resumed_by_beat_long_before_the_visibility_timeout(
    broker: PrivateBroker, processes: list, schema_tenant: ImportTenant, tmp_path: Path
) -> None:
    assert int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")) >= 3600
    processes.append(start_beat(tmp_path))
    processes.append(WorkerProcess("sweeper", queues="default").start())
    doomed = WorkerProcess("doomed", queues="imports", concurrency=1).start()
    processes.append(doomed)
    created = big_import(schema_tenant, tmp_path)
    wait_for_phase(schema_tenant, created["id"], "writing")
    assert doomed.process is not None
    kill_process_tree(doomed.process.pid)
    doomed.process.wait()
    killed = time.monotonic()
    assert schema_tenant.job(created["id"])["status"] == "running"  # nobody is running it
    processes.append(WorkerProcess("rescuer", queues="imports", concurrency=1).start())

    job = schema_tenant.wait(created["id"], timeout=BOUND_S)
    print(f"import finished {time.monotonic() - killed:.1f}s after the worker was killed")
    assert job["attempts"] == 2
    assert_exactly_the_files_rows(schema_tenant, job)
    assert schema_tenant.stored(created["id"]).rows_read == ROWS


def test_a_worker_holding_an_unacknowledged_task_outlives_a_broker_outage_and_consumes_again(
    broker: PrivateBroker, processes: list, schema_tenant: ImportTenant, tmp_path: Path
) -> None:
    # Two processes: one runs the import, the other's slot keeps the worker waiting on BRPOP,
    # the state in which kombu 5.7's channel close failed (control_plane.worker.broker).
    worker = WorkerProcess("outlasting", queues="imports", concurrency=2).start()
    processes.append(worker)
    process = worker.process
    assert process is not None
    created = big_import(schema_tenant, tmp_path)
    wait_for_phase(schema_tenant, created["id"], "writing")  # its message is unacknowledged now

    subprocess.run(
        ["redis-cli", "-p", str(broker.port), "shutdown", "nosave"], capture_output=True, timeout=10
    )
    broker.process.wait(timeout=10)
    time.sleep(0.5)  # back before the task finishes: it acknowledges after the reconnection
    broker.process, _ = start_redis(tmp_path, port=broker.port)

    job = schema_tenant.wait(created["id"], timeout=BOUND_S)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    assert_exactly_the_files_rows(schema_tenant, job)
    response = schema_tenant.upload(csv_bytes(generated_rows(SMALL, "P1")))
    assert response.status_code == 202, response.content
    following = response.json()["id"]

    def consumed() -> bool:
        # A worker that met an "Unrecoverable error" finishes its running task, then exits.
        assert process.poll() is None, f"the worker exited; see {worker.log_path}"
        return bool(schema_tenant.job(following)["status"] == "succeeded")

    wait_until(consumed, BOUND_S, "the next import")
