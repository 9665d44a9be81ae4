"""Fixtures for real services: the PostgreSQL database made by `platform/dev.sh test`, Redis,
and Celery worker processes.

The test database exists before pytest starts (created and migrated by the owner role, like
production); tests connect as the app role, so nothing here can pass by being a superuser.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from control_plane.celery import app as celery_app
from tenants.models import RATE_LIMIT_CLASSES, Plan
from tests.empty_shared_schema import CHILD_ENV, PROFILE_KEY, BackgroundProfile

# WorkerProcess lives with the other process helpers; tests import it from here too.
from tests.processes import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
PROFILE_TESTS = "tests/test_empty_shared_schema.py"

# Test script directories and throw-away tenants, for the migrator's and the fan-out's tests.
pytest_plugins = ["tests.migrations_sqla.fixtures", "tests.citus"]

# Rate limits (control_plane.ratelimits) run on every request of the session, with keys of this
# session only (a fresh test database reuses tenant and token ids) and quotas no other test's
# traffic reaches; tests/control_plane/ratelimits set their own small ones. Workers and servers
# started by tests inherit both through the environment.
os.environ["RATE_LIMIT_KEY_PREFIX"] = f"rl-{uuid.uuid4().hex[:8]}"
os.environ["RATE_LIMIT_PLANS"] = json.dumps(
    {plan: dict.fromkeys(RATE_LIMIT_CLASSES, 10**6) for plan in Plan.values}
)
os.environ["RATE_LIMIT_AUTH_FAILURES"] = str(10**6)  # many tests send bad tokens on purpose
settings.RATE_LIMIT_KEY_PREFIX = os.environ["RATE_LIMIT_KEY_PREFIX"]
settings.RATE_LIMIT_AUTH_FAILURES = 10**6
settings.RATE_LIMIT_PLANS = json.loads(os.environ["RATE_LIMIT_PLANS"])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the empty_shared_schema child now if a test of this session will read its outcome:
    it runs beside the session's other tests (tests/empty_shared_schema.py). Not in an xdist
    worker (tests/parallel.py): each collects every test but runs only some, and the worker
    that gets the profile's file runs the child then, beside the other workers' tests."""
    wanted = any(item.nodeid.startswith(PROFILE_TESTS) for item in session.items)
    in_worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    if (
        wanted
        and not session.config.option.collectonly
        and not os.environ.get(CHILD_ENV)
        and not in_worker
    ):
        session.config.stash[PROFILE_KEY] = BackgroundProfile("tests")


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(PROFILE_KEY, None)
    if started is not None:
        started.stop()


@pytest.fixture(scope="session")
def django_db_setup() -> None:
    """Use the database `platform/dev.sh test` prepared; never create or destroy one here."""


@pytest.fixture
def unique() -> str:
    """A short unique token for names that must not collide across tests and runs."""
    return uuid.uuid4().hex[:10]


# A broadcast to named workers returns as soon as each has answered; this only bounds a slow one.
BROADCAST_TIMEOUT_S = 20.0


@contextmanager
def nobody_else_consumes(queue: str) -> Iterator[None]:
    """For the block, the workers already running (an earlier test's, the session's) stop
    consuming `queue`, so a test's own worker gets its messages or the queue can be counted.

    The broadcast names this session's live workers (WorkerProcess.running_names): it returns
    once each has answered, instead of waiting a fixed time for replies from workers unknown.
    """
    running = WorkerProcess.running_names()
    replies = (
        celery_app.control.cancel_consumer(
            queue, destination=running, reply=True, timeout=BROADCAST_TIMEOUT_S
        )
        if running
        else []
    ) or []
    others = [name for reply in replies for name in reply]
    missing = set(running) - set(others)
    assert not missing, f"workers that did not stop consuming {queue}: {sorted(missing)}"
    try:
        yield
    finally:
        if others:
            celery_app.control.add_consumer(
                queue, destination=others, reply=True, timeout=BROADCAST_TIMEOUT_S
            )


@pytest.fixture(scope="session")
def celery_worker_process() -> Iterator[WorkerProcess]:
    """One real worker for the session, consuming every queue."""
    celery_app.control.purge()
    worker = WorkerProcess("test-worker").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return str(settings.REDIS_URL)


@pytest.fixture
def committed(django_db_blocker: Any) -> Iterator[None]:
    """Database access with no wrapping transaction: rows commit and workers see them.

    Tests using it make unique names instead of relying on rollback.
    """
    with django_db_blocker.unblock():
        yield


@pytest.fixture(autouse=True)
def back_to_public_schema() -> Iterator[None]:
    """A test that selects a tenant schema on Django's connection (schema_context aside) must
    not leave the next test there; requests themselves never leave the public schema."""
    yield
    from django.db import connection

    connection.set_schema_to_public()  # type: ignore[attr-defined]
