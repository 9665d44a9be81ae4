"""Fixtures of the fan-out tests: a slow test script directory and a worker on the migrations
queue with a short visibility timeout (a killed worker's batch comes back in seconds). Script
directories and throw-away tenants come from tests.migrations_sqla.fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from control_plane.celery import app as celery_app
from tests.conftest import WorkerProcess
from tests.migrations_sqla.support import make_script_dir

VISIBILITY_TIMEOUT_S = "5"


@pytest.fixture(scope="session")
def slow_script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same revisions, TEST_REVISION taking 25 ms a schema: runs last long enough to interrupt."""
    return make_script_dir(tmp_path_factory.mktemp("slow_scripts"), sleep_ms=25)


def start_worker(
    name: str, concurrency: int = 2, visibility_timeout: str = VISIBILITY_TIMEOUT_S
) -> WorkerProcess:
    """A worker on the migrations queue with a short visibility timeout and a 1 s sweep."""
    overrides = {
        "CELERY_VISIBILITY_TIMEOUT": visibility_timeout,
        "DJANGO_SETTINGS_MODULE": "tests.fanout.worker_settings",
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        return WorkerProcess(name, queues="migrations", concurrency=concurrency).start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def fanout_worker() -> Iterator[WorkerProcess]:
    celery_app.control.purge()
    worker = start_worker("fanout")
    yield worker
    worker.stop()
