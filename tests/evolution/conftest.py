"""Fixtures of the evolution tests: a fan-out worker, tenants of both modes with tasks, the
platform put back at the released head afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control_plane.celery import app as celery_app
from tests.conftest import WorkerProcess
from tests.fanout.conftest import start_worker


@pytest.fixture(scope="module")
def evolution_worker() -> Iterator[WorkerProcess]:
    celery_app.control.purge()
    worker = start_worker("evolution")
    yield worker
    worker.stop()
