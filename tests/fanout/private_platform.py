"""A platform of its own for tests that restart PostgreSQL: a private PostgreSQL cluster (its own
port and data folder, Debian's binaries run as user postgres) and a private Redis, set up by
`setup_platform`, with the environment its child processes (workers, the CLI) use.

Nothing here touches the shared PostgreSQL at 5432 or the shared Redis: restarting them would
disturb every other test run on the machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "taskflow_private"
OWNER, APP = ("taskflow_owner", "taskflow_owner"), ("taskflow_app", "taskflow_app")


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1])


def as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else list(args)


class PrivateCluster:
    """initdb, start, stop and restart a throw-away cluster on its own port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fanout-private-pg-", dir="/var/tmp"))
        self.data = self.root / "data"
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.bin = pg_bin()

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), *args),
            cwd="/", check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def init_and_start(self) -> PrivateCluster:
        subprocess.run(
            as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "-E", "UTF8",
            ),
            cwd="/", check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.start()
        subprocess.run(
            [
                "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                str(self.port), "-U", "postgres", "-d", "postgres",
                "-v", f"owner_role={OWNER[0]}", "-v", f"owner_password={OWNER[1]}",
                "-v", f"app_role={APP[0]}", "-v", f"app_password={APP[1]}",
                "-v", f"db_name={DB_NAME}", "-f", str(ROOT / "platform/postgres/init.sql"),
            ],
            check=True, stdout=subprocess.DEVNULL,
            env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=100"
        self.pg_ctl("-l", str(self.root / "server.log"), "-w", "-o", options, "start")

    def restart(self) -> None:
        """A fast shutdown (every connection terminated) and a start, as an operator's restart."""
        self.pg_ctl("-m", "fast", "-w", "stop")
        self.start()

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, role: tuple[str, str], db: str = DB_NAME) -> str:
        return f"postgres://{role[0]}:{role[1]}@127.0.0.1:{self.port}/{db}"

    def query(self, statement: str, *params: object) -> list[tuple[object, ...]]:
        """As the owner, on a new connection (raises psycopg.OperationalError while down)."""
        with psycopg.connect(self.url(OWNER), connect_timeout=2) as conn:
            return conn.execute(statement, params).fetchall()


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fanout-private-redis-"))
        self.process = subprocess.Popen(
            [
                "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.root),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


class PrivatePlatform:
    """setup_platform on the private cluster and Redis; children started with `env`."""

    def __init__(self, cluster: PrivateCluster, redis: PrivateRedis, logs: Path) -> None:
        self.cluster, self.redis, self.logs = cluster, redis, logs
        self.env = {
            **os.environ,
            "DATABASE_URL": cluster.url(APP),
            "MIGRATION_DATABASE_URL": cluster.url(OWNER),
            "REDIS_URL": redis.url,
            "CELERY_BROKER_URL": redis.url,
            "CELERY_RESULT_BACKEND": redis.url,
            "DJANGO_SETTINGS_MODULE": "tests.fanout.worker_settings",
        }
        self.children: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def python(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`code` after django.setup(), in a child process on the private platform."""
        prelude = "import django; django.setup()\n"
        return subprocess.run(
            [sys.executable, "-c", prelude + code], cwd=ROOT, env=self.env, capture_output=True,
            text=True, timeout=timeout, check=True,
        )  # fmt: skip

    def spawn(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        process = subprocess.Popen(
            list(args), cwd=ROOT, env=self.env, stdout=out.open("wb"), stderr=err.open("wb")
        )
        self.children.append(process)
        return process, out, err

    def start_worker(self, name: str, timeout: float = 60) -> tuple[subprocess.Popen[bytes], Path]:
        process, out, err = self.spawn(
            name, sys.executable, "-m", "celery", "-A", "control_plane", "worker", "-Q",
            "migrations", "-c", "2", "-n", f"{name}@private", "--without-gossip",
            "--without-mingle", "-l", "info",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited early: {err.read_text()[-2000:]}")
            if " ready." in err.read_text() + out.read_text():
                return process, err
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s: {err.read_text()[-2000:]}")

    def stop(self) -> None:
        for process in reversed(self.children):
            stop_process(process, timeout=10)
