"""Plain helpers for fan-out tests and the browser test: waiting for runs, killing workers."""

from __future__ import annotations

import time

from control_plane.fanout.models import MigrationRun
from tests.processes import kill_process_tree

__all__ = ["kill_process_tree", "wait_for_run", "wait_until"]


def wait_for_run(run_id: int, timeout: float = 60) -> MigrationRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = MigrationRun.objects.get(pk=run_id)
        if run.is_finished and not run.steps.filter(status="running").exists():
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {MigrationRun.objects.get(pk=run_id).status}")


def wait_until(predicate, timeout: float = 30, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
