"""Plain helpers for fan-out tests and the browser test: waiting for runs, killing workers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from control_plane.fanout.models import MigrationRun


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


def kill_process_tree(pid: int) -> None:
    """SIGKILL a worker and its pool children at once, as a lost machine would."""
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent_of(int(entry.name)) == pid
    ]
    for victim in [*children, pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])
