"""Helpers for the child processes tests and benchmarks start: servers, workers, PgBouncer."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_redis(
    folder: Path, timeout: float = 10, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server (no persistence) on `port` (default: a free one): (process, URL
    of its db 0). Started again on the same port, it is a restart that lost every key."""
    port = port or free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    stop_process(process)
    raise RuntimeError("redis-server did not start")


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


@dataclass
class Gunicorn:
    """A gunicorn process on 127.0.0.1, its stdout and stderr kept apart (spans, log lines).
    Hosts are chosen with the Host header: `*.localhost` does not resolve in Python."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        host: str = "localhost",
        body: bytes | None = None,
        **headers: str,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **headers})
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def log_lines(self) -> list[str]:
        return self.stderr.read_text().splitlines()


def start_gunicorn(
    folder: Path,
    *,
    workers: int = 2,
    threads: int = 2,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Gunicorn:
    """gunicorn as deployments run it (`-c platform/gunicorn.conf.py`, DEBUG off) on this
    session's database and Redis, answering `/healthz` when it returns. `env` adds to (or
    overrides) the test process's environment."""
    port = free_port()
    stdout, stderr = folder / "stdout.log", folder / "stderr.log"
    environment = os.environ | {"DEBUG": "false", "PYTHONUNBUFFERED": "1"} | dict(env or {})
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "control_plane.wsgi:application",
                "-c", "platform/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--threads", str(threads), "--timeout", "120",
            ],
            cwd=ROOT, env=environment, stdout=out, stderr=err,
        )  # fmt: skip
    server = Gunicorn(process, port, stdout, stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{stderr.read_text()}")
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            time.sleep(0.2)
    stop_process(process)
    raise RuntimeError(f"gunicorn did not answer within {timeout:.0f} s:\n{stderr.read_text()}")
