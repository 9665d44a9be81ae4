"""`manage.py evolve NAME PHASE --wait` as an operator runs it (a subprocess, a real worker):
exit 0 and a last line saying what completed; a phase that fails is a non-zero exit with one
line saying why; --timeout gives up (exit 2) in one line while the phase goes on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from psycopg import sql

from control_plane.celery import app as celery_app
from control_plane.evolution import phases
from tenants.database_roles import owner_connection
from tests.conftest import nobody_else_consumes
from tests.evolution.support import (
    add_tasks,
    make_rls_tenants,
    make_tenants,
    restore_platform,
    set_template,
    wait_for,
)
from tests.migrations_sqla.support import ROOT

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("evolution_worker", "committed")]


def evolve(
    *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "evolve", "tasks_due_at", *args], cwd=ROOT,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def tenants(unique: str):
    prefix = f"w{unique[:8]}"
    set_template("", "0006")
    schema_tenants = make_tenants(prefix, 2)
    rls = make_rls_tenants(prefix, 1)
    for tenant in [*schema_tenants, *rls]:
        add_tasks(tenant, 10)
    phases.get_evolution("tasks_due_at").delete()
    phases.set_options(phases.get_evolution("tasks_due_at"), {"batch_rows": 5})
    yield schema_tenants
    restore_platform(prefix)


def rename_tasks(schema: str, old: str, new: str) -> None:
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, old), sql.Identifier(new)
            )
        )
        conn.commit()


def test_wait_exits_0_once_the_phase_completed(tenants) -> None:
    done = evolve("expand", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "tasks_due_at: completed expand"
    assert "started (run " in done.stdout
    again = evolve("backfill", "--wait", "--batch-rows", "3")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == "tasks_due_at: completed backfill"


def test_wait_exits_non_zero_in_one_line_when_the_phase_fails_and_0_once_resumed(
    tenants,
) -> None:
    broken = tenants[0].schema_name
    rename_tasks(broken, "tasks", "tasks_elsewhere")
    try:
        failed = evolve("expand", "--wait")
    finally:
        rename_tasks(broken, "tasks_elsewhere", "tasks")
    assert failed.returncode == 1, failed.stdout
    line = one_line(failed.stderr)
    assert line.startswith("CommandError: tasks_due_at: failed: "), line
    resumed = evolve("expand", "--resume", "--wait")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == "tasks_due_at: completed expand"


def test_wait_gives_up_after_its_timeout_in_one_line_and_the_phase_goes_on(tenants) -> None:
    with nobody_else_consumes("migrations"):
        gave_up = evolve("expand", "--wait", "--timeout", "2")
    assert gave_up.returncode == 2, gave_up.stdout
    assert "gave up watching after 2s; it goes on" in one_line(gave_up.stderr)
    evolution = phases.get_evolution("tasks_due_at")
    assert wait_for(evolution, timeout=180)["completed"] == "expand"  # a worker took it after
    celery_app.control.purge()


def test_a_database_it_cannot_reach_is_one_line_and_a_non_zero_exit() -> None:
    unreachable = "postgres://postgres@127.0.0.1:1/nowhere"
    refused = evolve("expand", "--wait", env={"DATABASE_URL": unreachable})
    assert refused.returncode == 1, refused.stdout
    assert one_line(refused.stderr).startswith(
        "CommandError: database unavailable, nothing started: "
    )
