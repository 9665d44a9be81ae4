"""The Celery app on Redis, and a task through a real worker process."""

from __future__ import annotations

import re
import time

import pytest

from control_plane.celery import QUEUES
from control_plane.celery import app as celery_app
from control_plane.worker.tasks import ping
from tenants.database_roles import app_role_name
from tests.conftest import WorkerProcess


def test_queues_and_late_acknowledgement_are_configured() -> None:
    assert (
        {q.name for q in celery_app.conf.task_queues}
        == set(QUEUES)
        == {"default", "migrations", "imports"}
    )
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.task_reject_on_worker_lost is True
    assert celery_app.conf.broker_url.startswith("redis://")


def test_a_worker_finds_every_task_under_the_names_messages_and_beat_use() -> None:
    """Tasks live with their domains (tenancy, worker, the apps); their names never moved."""
    celery_app.loader.import_default_modules()
    names = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert {
        "control_plane.tasks.ping",
        "control_plane.tasks.provision_tenant",
        "control_plane.tasks.move_tenant",
        "control_plane.fanout.reap_stuck_runs",
        "control_plane.worker.recover_stranded_jobs",
        "control_plane.imports.tasks.remove_old_files",
        "tenants.tasks.refill_spares",
        "taskflow.tasks.purge_soft_deleted",
    } <= names
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert scheduled <= names


@pytest.mark.worker
def test_a_task_runs_in_a_real_worker_process_as_the_app_role(
    celery_worker_process: WorkerProcess,
) -> None:
    result = ping.delay("hello").get(timeout=30)
    assert result["payload"] == "hello"
    assert result["pid"] != __import__("os").getpid()
    assert result["role"] == app_role_name()


@pytest.mark.worker
def test_a_worker_keeps_its_database_connection_between_tasks(unique) -> None:
    """Celery's fixup would reconnect for every task; CELERY_DB_REUSE_MAX and our own
    close_old_connections() keep one connection per worker process, as a web process does."""
    queue = f"reuse_{unique}"
    worker = WorkerProcess("reuse", queues=queue, concurrency=1).start()
    try:
        results = [ping.apply_async(("x",), queue=queue).get(timeout=30) for _ in range(3)]
    finally:
        worker.stop()
    assert len({r["pid"] for r in results}) == 1
    assert len({r["backend_pid"] for r in results}) == 1, results


@pytest.mark.worker
def test_each_worker_process_warms_up_provisioning_as_it_starts(unique) -> None:
    """So that a worker's first onboarding does not generate the clone script itself."""
    worker = WorkerProcess("warm-up", queues=f"warm_up_{unique}", concurrency=2).start()
    warmed: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while len(warmed) < 2 and time.monotonic() < deadline:
            log = worker.log_path.read_text(errors="replace")
            warmed = set(re.findall(r"provisioning warmed up in [\d.]+ ms \(pid (\d+)\)", log))
            time.sleep(0.1)
    finally:
        worker.stop()
    assert len(warmed) == 2, worker.log_path.read_text(errors="replace")[-3000:]
