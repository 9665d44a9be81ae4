"""Real servers for the observability tests: gunicorn with the platform's hooks (several worker
processes, one metrics folder), its stdout and stderr kept apart (spans, log lines)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkerProcess
from tests.processes import Gunicorn, free_port, start_gunicorn, stop_process
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


def samples(text: str, name: str) -> dict[str, float]:
    """`name{labels}` -> value, from an exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


@dataclass
class MeteredWorker:
    """A real worker whose pool processes' metrics its main process serves on `port`."""

    worker: WorkerProcess
    port: int

    def scrape(self) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
            return str(response.read().decode())

    def value(self, name: str, **labels: str) -> float:
        """The sample `name{labels}` (labels in the exposition's order), 0 when absent."""
        inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
        return samples(self.scrape(), name).get(f"{name}{{{inner}}}" if inner else name, 0.0)


def start_metered_worker(folder: Path, queues: str, concurrency: int = 2) -> MeteredWorker:
    """A worker on `queues` with a metrics folder of its own and its exporter on a free port."""
    folder.mkdir()
    port = free_port()
    worker = WorkerProcess(
        "metered",
        queues=queues,
        concurrency=concurrency,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "METRICS_TOKEN": METRICS_TOKEN,
            "WORKER_METRICS_PORT": str(port),
        },
    ).start()
    return MeteredWorker(worker, port)


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
