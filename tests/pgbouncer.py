"""A real PgBouncer in transaction pooling mode, started for the tests that need one.

PgBouncer refuses to run as root, so as root it runs as the `postgres` user, with its files in a
folder that user can write.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.processes import free_port, stop_process

CONFIG = """[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


@dataclass
class PgBouncer:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]

    def url_for(self, database_url: str) -> str:
        """`database_url` rewritten to reach the same database through this PgBouncer."""
        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}"))

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_pgbouncer(database_url: str, *, pool_size: int = 2) -> PgBouncer:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    target = urlsplit(database_url)
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = free_port()
    users = {target.username or "postgres"}
    (folder / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (folder / "pgbouncer.ini").write_text(
        CONFIG.format(
            host=target.hostname or "127.0.0.1",
            port=target.port or 5432,
            listen_port=port,
            folder=folder,
            pool_size=pool_size,
        )
    )
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        for child in folder.iterdir():
            shutil.chown(child, "postgres")
        folder.chmod(0o755)
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (
                (folder / "pgbouncer.log").read_text()
                if (folder / "pgbouncer.log").exists()
                else ""
            )
            raise RuntimeError(f"pgbouncer exited: {log[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return PgBouncer(folder, port, process)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("pgbouncer did not start listening")
