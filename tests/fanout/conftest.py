"""Fixtures of the fan-out tests: a test script directory, a worker on the migrations queue with
a short visibility timeout (a killed worker's batch comes back in seconds), throw-away tenants."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.celery import app as celery_app
from tenants.models import Tenant
from tests.conftest import WorkerProcess
from tests.fanout.support import (
    BASE_REVISION,
    drop_tenants,
    make_script_dir,
    make_tenants,
    set_template,
)

VISIBILITY_TIMEOUT_S = "5"


@pytest.fixture(scope="session")
def script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """migrations_sqla's versions plus TEST_REVISION (nullable column + index)."""
    return make_script_dir(tmp_path_factory.mktemp("scripts"))


@pytest.fixture(scope="session")
def slow_script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same revisions, TEST_REVISION taking 25 ms a schema: runs last long enough to interrupt."""
    return make_script_dir(tmp_path_factory.mktemp("slow_scripts"), sleep_ms=25)


@pytest.fixture(scope="session")
def concurrent_script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Up to TEST_REVISION_2, whose index is built CONCURRENTLY outside the transaction."""
    return make_script_dir(tmp_path_factory.mktemp("concurrent_scripts"), with_second=True)


def start_worker(name: str, concurrency: int = 2) -> WorkerProcess:
    """A worker on the migrations queue with a short visibility timeout and a 1 s sweep."""
    overrides = {
        "CELERY_VISIBILITY_TIMEOUT": VISIBILITY_TIMEOUT_S,
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


@pytest.fixture
def tenants_at_base(
    django_db_blocker: Any, unique: str, script_location: str
) -> Iterator[Callable[[int], list[Tenant]]]:
    """Makes committed tenants cloned from the template at BASE_REVISION; drops them afterwards."""
    prefix = f"f{unique[:8]}"
    with django_db_blocker.unblock():
        set_template(script_location, BASE_REVISION)

    def make(count: int) -> list[Tenant]:
        with django_db_blocker.unblock():
            return make_tenants(prefix, count)

    yield make
    with django_db_blocker.unblock():
        drop_tenants(prefix)
        set_template(script_location, BASE_REVISION)


__all__ = ["Path"]
