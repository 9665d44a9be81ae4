"""Real servers for the observability tests: gunicorn with the platform's hooks (several worker
processes, one metrics folder), its stdout and stderr kept apart (spans, log lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Gunicorn, start_gunicorn, stop_process
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

METRICS_TOKEN = "metrics-test-token-7f3a"


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output (other output, e.g. a traceback, skipped)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Any]:
    """A factory of gunicorn servers, each stopped at the end of the test."""
    started: list[Gunicorn] = []

    def start(workers: int = 2, **env: str) -> Gunicorn:
        folder = tmp_path / f"gunicorn-{len(started)}"
        folder.mkdir()
        server = start_gunicorn(folder, workers=workers, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process)


@pytest.fixture(scope="module")
def live_tenant(django_db_blocker: Any) -> Iterator[TenantFixture]:
    """A committed schema-mode tenant with a token per role, for servers in other processes."""
    with django_db_blocker.unblock():
        fixture = provisioned_tenant()
    yield fixture
    with django_db_blocker.unblock():
        discard(fixture)
