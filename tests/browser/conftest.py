"""Fixtures for browser tests: a real web server process and a committed operator account.

The server runs `manage.py runserver` with this process's environment, so it uses the database
and Redis that `platform/dev.sh test` prepared; rows it writes are committed, so tests clean up.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.conftest import ROOT
from tests.processes import free_port, stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / ".data" / "screenshots"

# How long a browser test waits for the page to show what it expects (Playwright's default is
# 5 s): the server and Chromium share a loaded 2-core machine with the rest of the suite, and
# a wait ends as soon as its condition holds, so a generous deadline costs nothing when it passes.
EXPECT_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session", autouse=True)
def generous_expect_timeout() -> None:
    """Every `expect(...)` of the browser tests waits up to EXPECT_TIMEOUT_MS unless it says."""
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@dataclass
class WebServer:
    """A `runserver` process on a free port of 127.0.0.1, reached as http://localhost:<port>."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"


def _wait_until_serving(server: WebServer, log_path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"runserver exited early; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"runserver did not answer within {timeout}s; see {log_path}")


@pytest.fixture(scope="session")
def web_server() -> Iterator[WebServer]:
    """One web server process for the browser tests of the session."""
    port = free_port()
    env = os.environ | {
        "CSRF_TRUSTED_ORIGINS": f"http://localhost:{port}",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = ROOT / ".data" / f"runserver-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = WebServer(port=port, process=process)
    try:
        _wait_until_serving(server, str(log_path))
        yield server
    finally:
        stop_process(process, timeout=10)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@pytest.fixture
def operator_account(django_db_blocker: Any, unique: str) -> Iterator[Credentials]:
    """A superuser committed to the database, so the server process can sign it in."""
    credentials = Credentials(username=f"op_{unique}", password=secrets.token_urlsafe(16))
    with django_db_blocker.unblock():
        user = User.objects.create_superuser(
            credentials.username, f"{credentials.username}@example.com", credentials.password
        )
    yield credentials
    with django_db_blocker.unblock():
        User.objects.filter(pk=user.pk).delete()
