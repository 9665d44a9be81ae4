"""The one home of the child processes tests and benchmarks start: web servers (gunicorn),
Celery workers, Redis, and what reads their CPU from /proc. PgBouncer's is tests/pgbouncer.py.

Nothing here imports Django or the platform at import time: benchmarks import it before they
set up Django for their own database.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
    for victim in [*children(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a gunicorn master's workers, a worker's pool)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent_of(int(entry.name)) == pid
    ]


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process of `pids` has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


class LoggedProcess:
    """A child process (gunicorn, celery) with its output in a temporary file that outlives it."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        prefix: str = "bench-",
        cwd: Path = ROOT,
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(args), cwd=cwd, env=dict(env), stdout=self.log, stderr=subprocess.STDOUT
        )

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        stop_process(self.proc, timeout=timeout)
        self.log.close()


GUNICORN_WORKER_CLASS = "control_plane.http.gunicorn_worker.ProblemThreadWorker"


class GunicornServer(LoggedProcess):
    """A benchmark's gunicorn (gthread-like, keep-alive, large backlog) on a free port, with its
    log in a file; it returns once /healthz answers on `host` and every worker is up.

    `config`: a gunicorn config file (platform/gunicorn.conf.py: the metrics folder of
    production); `extra`: more gunicorn arguments; `cwd`: the source tree it serves."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int,
        threads: int,
        host: str = "localhost",
        worker_class: str = GUNICORN_WORKER_CLASS,
        config: str | None = None,
        extra: Sequence[str] = ("--log-level", "warning"),
        prefix: str = "bench-gunicorn-",
        timeout: float = 60,
        cwd: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.command = [
            str(Path(sys.executable).parent / "gunicorn"), "control_plane.wsgi:application",
            *(["-c", config] if config else []),
            "--bind", f"127.0.0.1:{self.port}", "--worker-class", worker_class,
            "--workers", str(workers), "--threads", str(threads), "--keep-alive", "30",
            "--backlog", "2048", "--worker-tmp-dir", "/dev/shm",  # noqa: S108 - heartbeat files
            *extra,
        ]  # fmt: skip
        super().__init__(self.command, env, prefix, cwd)
        deadline = time.monotonic() + timeout
        while True:
            if self._healthy(host) and len(self.worker_pids()) == workers:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"gunicorn did not start:\n{self.log_text()}")
            time.sleep(0.2)

    def _healthy(self, host: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/healthz", headers={"Host": host})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)


def start_celery_worker(
    env: Mapping[str, str],
    *,
    queues: str,
    concurrency: int,
    name: str = "bench",
    until_pool_is_up: bool = False,
    timeout: float = 60,
    cwd: Path = ROOT,
) -> LoggedProcess:
    """A benchmark's `celery worker` on `queues`, returned once it answers a ping (and, with
    `until_pool_is_up`, once its pool has a process); `cwd`: the source tree it runs (another
    checkout's modules come first on PYTHONPATH)."""
    from control_plane.celery import app

    node = f"{name}-{time.monotonic_ns()}@%h"
    worker = LoggedProcess(
        [sys.executable, "-m", "celery", "-A", "control_plane", "worker", "-Q", queues,
         "-c", str(concurrency), "-n", node, "--without-gossip", "--without-mingle",
         "-l", "warning"],
        {**env, "PYTHONPATH": str(cwd)} if cwd != ROOT else env,
        prefix=f"{name}-worker-",
        cwd=cwd,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5) and (not until_pool_is_up or children(worker.proc.pid)):
            return worker
    worker.stop()
    raise SystemExit(f"worker did not start; see {worker.log.name}")


class WorkerProcess:
    """A real `celery worker` process, started and stopped by a test.

    Every one started is known to the class (`running_names`), so a broadcast to the session's
    workers can name them and return once each has answered instead of waiting out its timeout.
    """

    # Strong references: a worker whose object a test dropped without stopping it still counts.
    started: ClassVar[set[WorkerProcess]] = set()

    @classmethod
    def running_names(cls) -> list[str]:
        """The node names of this session's workers whose main process is still alive."""
        return sorted(w.name for w in cls.started if w.process and w.process.poll() is None)

    def __init__(
        self,
        name: str,
        queues: str = "default,migrations,imports",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ):
        self.name = f"{name}@{uuid.uuid4().hex[:6]}"
        self.env = os.environ | (env or {})
        self.queues = queues
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / ".data" / f"worker-{self.name.replace('@', '-')}.log"

    def start(self, timeout: float = 90) -> WorkerProcess:
        """Start the worker and return once it answers a ping. The deadline only bounds a worker
        that never comes up: on a 2-core machine at load 20, a cold start took over 30 s."""
        from control_plane.celery import app as celery_app

        self.log_path.parent.mkdir(exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "control_plane", "worker",
                "-Q", self.queues, "-c", str(self.concurrency), "-n", self.name,
                "--without-gossip", "--without-mingle", "-l", "info",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            if celery_app.control.ping(destination=[self.name], timeout=0.5):
                WorkerProcess.started.add(self)
                return self
        self.stop()
        raise RuntimeError(
            f"worker {self.name} did not answer within {timeout}s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, timeout=20)


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


def request_json(
    port: int, method: str, path: str, host: str, body: Any = None, headers: Mapping[str, str] = {}
) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of one request to 127.0.0.1:`port` on a new connection,
    with the tenant's Host header and `body` sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        sent = {"Host": host, **headers}
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()
