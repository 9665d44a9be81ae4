"""The dev script's supervision of web, worker and beat (platform/supervise.sh), exercised with
stand-in commands: when one exits the others are stopped and `run` fails; a signal or an error
in the script stops them all; nothing is left running."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT
from tests.processes import free_port, stop_process
from tests.superuser import superuser_connection

SUPERVISE = ROOT / "platform" / "supervise.sh"


def run_script(body: str, timeout: float = 60) -> tuple[int, list[int], str]:
    """Run `body` in bash with the supervision functions: exit status, started pids, stderr."""
    script = f"set -euo pipefail\nsource {SUPERVISE}\n{body}"
    completed = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=timeout
    )
    pids = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", completed.stderr)]
    return completed.returncode, pids, completed.stderr


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_when_one_process_dies_the_others_are_stopped_and_run_fails() -> None:
    started = time.monotonic()
    status, pids, stderr = run_script(
        """
        supervise_start web sleep 300
        supervise_start worker sh -c 'sleep 0.5; kill -KILL $$'
        supervise_start beat sleep 300
        supervise
        """
    )
    assert status == 128 + signal.SIGKILL
    assert "worker exited with status 137" in stderr
    assert time.monotonic() - started < 10
    assert len(pids) == 3
    assert not any(running(pid) for pid in pids)


def test_a_process_exiting_cleanly_still_stops_the_rest_and_fails() -> None:
    status, pids, stderr = run_script(
        """
        supervise_start web sleep 300
        supervise_start beat true
        sleep 0.5  # beat is gone before supervise starts watching
        supervise_start worker sleep 300
        supervise
        """
    )
    assert status == 1
    assert "beat exited with status 0" in stderr
    assert not any(running(pid) for pid in pids)


def test_sigterm_stops_every_process() -> None:
    script = (
        f"set -euo pipefail\nsource {SUPERVISE}\n"
        + "\n".join(f"supervise_start {name} sleep 300" for name in ("web", "worker", "beat"))
        + "\nsupervise"
    )
    process = subprocess.Popen(["bash", "-c", script], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    pids = [int(re.findall(r"pid (\d+)", process.stderr.readline())[0]) for _ in range(3)]
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 128 + signal.SIGTERM
    assert not any(running(pid) for pid in pids)


def test_a_script_failing_after_starting_processes_leaves_none_behind() -> None:
    """The stop handler runs from the EXIT trap, after the function that started them returned."""
    status, pids, _ = run_script(
        """
        start_all() { supervise_start web sleep 300; supervise_start beat sleep 300; }
        trap supervise_stop EXIT
        start_all
        sleep 0.5  # a SIGTERM between fork and exec is lost; STOP_TIMEOUT's SIGKILL covers that
        false
        """
    )
    assert status == 1
    assert len(pids) == 2
    assert not any(running(pid) for pid in pids)


def test_a_process_ignoring_sigterm_is_killed_after_the_stop_timeout() -> None:
    started = time.monotonic()
    status, pids, _ = run_script(
        """
        STOP_TIMEOUT=1
        supervise_start web sh -c 'trap "" TERM; while :; do sleep 0.1; done'
        supervise_start worker sh -c 'sleep 0.3; exit 2'
        supervise
        """
    )
    assert status == 2
    assert time.monotonic() - started < 8
    assert not any(running(pid) for pid in pids)


def start_redis(directory: Path, port: int) -> int:
    """A redis-server as the dev script starts one: daemonized, in `directory`, with a pid file."""
    directory.mkdir(parents=True)
    subprocess.run(
        [
            "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(directory),
            "--pidfile", str(directory / "redis.pid"),
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not (directory / "redis.pid").exists():
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return int((directory / "redis.pid").read_text())


def test_stop_stops_only_the_redis_this_checkout_started(tmp_path: Path) -> None:
    assert shutil.which("redis-server"), "the dev script needs redis-server (Debian's redis-server)"
    checkout = tmp_path / "checkout"
    (checkout / "platform").mkdir(parents=True)
    for name in ("dev.sh", "supervise.sh"):
        shutil.copy(ROOT / "platform" / name, checkout / "platform" / name)
    ours = start_redis(checkout / ".data" / "redis", free_port())
    other_dir = tmp_path / "other"
    other = start_redis(other_dir, free_port())
    try:
        result = subprocess.run(
            ["bash", str(checkout / "platform" / "dev.sh"), "stop"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while running(ours):
            assert time.monotonic() < deadline, "our redis-server is still running"
            time.sleep(0.05)
        assert running(other)
        assert "no PostgreSQL of ours running" in result.stderr

        # Another server's pid in our pid file: still not ours, it does not run from our directory.
        shutil.copy(other_dir / "redis.pid", checkout / ".data" / "redis" / "redis.pid")
        again = subprocess.run(
            ["bash", str(checkout / "platform" / "dev.sh"), "stop"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "no Redis of ours running" in again.stderr
        assert running(other)
    finally:
        for pid in (ours, other):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@pytest.mark.worker
def test_run_stops_web_and_beat_and_fails_when_the_worker_is_killed(tmp_path: Path) -> None:
    """`platform/dev.sh run` for real, on a database of its own, then SIGKILL to its worker."""
    database = f"{settings.DATABASES['default']['NAME']}_run"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "MIGRATION_DATABASE_URL", "DJANGO_ENV", "DEBUG"}
    } | {"DB_NAME": database, "WEB_PORT": str(free_port()), "REDIS_URL": settings.REDIS_URL}
    db = settings.DATABASES["default"]
    env |= {"DB_HOST": db["HOST"] or "127.0.0.1", "DB_PORT": str(db["PORT"] or 5432)}
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", str(ROOT / "platform" / "dev.sh"), "run"],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops all" not in err.read_text():
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.5)
        pids = {
            name: int(pid)
            for name, pid in re.findall(r"(\w+) started \(pid (\d+)\)", err.read_text())
        }
        assert set(pids) == {"web", "worker", "beat"}
        logins = out.read_text()
        assert "admin: " in logins
        assert "demo tenant: " in logins
        # Below the processes' own banners: runserver's came first.
        assert logins.index("Starting development server") < logins.index("admin: ")

        killed = time.monotonic()
        os.kill(pids["worker"], signal.SIGKILL)
        assert process.wait(timeout=30) == 128 + signal.SIGKILL
        assert time.monotonic() - killed < 30
        assert not running(pids["web"])
        assert not running(pids["beat"])
    finally:
        stop_process(process)
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with superuser_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
