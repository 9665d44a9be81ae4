"""The empty_shared_schema profile, run from the default test command in a child pytest.

Those tests need a shared schema no other tenant has written to, so the default run deselects
them (pyproject's addopts) and tests/test_empty_shared_schema.py runs them here instead: a child
`pytest -m empty_shared_schema` against a database of its own on the same server (created with
platform/postgres/init.sql, set up by `manage.py setup_platform`, dropped afterwards) and a
private Redis (its Celery queues are no other worker's). Nothing here touches the session's own
test database, its Redis db or its workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests.databases import (
    SETUP_TIMEOUT_S,
    create_database,
    drop_database,
    platform_environment,
    start_setup_platform,
)
from tests.processes import ROOT, start_redis, stop_process

MARK = "empty_shared_schema"
# Set in the child's environment: a child never starts a child of its own.
CHILD_ENV = "TASKFLOW_EMPTY_SHARED_SCHEMA_CHILD"
SUMMARY_WORDS = {"PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"}
# The child runs a few worker tests (one SIGKILLs a worker mid-lane): minutes at most even on a
# loaded machine; the deadline only stops a hung child from hanging the whole run.
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ProfileRun:
    """The child's exit status, its whole output, and each of its tests' outcome by node id
    (the words of pytest's short summary: PASSED, FAILED, ERROR...)."""

    returncode: int
    output: str
    outcomes: dict[str, str]

    def of_file(self, path: str) -> dict[str, str]:
        return {node: result for node, result in self.outcomes.items() if node.startswith(path)}


def database_name() -> str:
    """The session's test database name with a suffix: one lane's profile never meets another's."""
    return f"{settings.DATABASES['default']['NAME']}_ess"


def _outcomes(output: str) -> dict[str, str]:
    """Node id -> PASSED / FAILED / ERROR / SKIPPED..., from the child's `-rA` summary lines."""
    outcomes = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in SUMMARY_WORDS and rest.startswith("tests/"):
            outcomes[rest.split(" - ", 1)[0].strip()] = word
    return outcomes


class BackgroundProfile:
    """`run_profile` on a thread of its own, started as soon as the session knows it will need
    it (tests/conftest.py, at the end of collection): the child's minute of set-up and tests
    overlaps the session's other tests instead of adding to them. Nothing is shared but the
    server, so the two runs cannot see each other's rows or messages."""

    def __init__(self, *paths: str) -> None:
        self._outcome: ProfileRun | None = None
        self._error: BaseException | None = None
        self._children: list[subprocess.Popen[str]] = []
        self._thread = threading.Thread(
            target=self._run, args=paths, name="empty-shared-schema", daemon=True
        )
        self._thread.start()

    def _run(self, *paths: str) -> None:
        try:
            self._outcome = run_profile(*paths, started=self._children)
        except BaseException as error:  # handed to whoever waits for the outcome
            self._error = error

    def result(self) -> ProfileRun:
        """The child's outcome, waiting for it (never longer than its own deadlines)."""
        self._thread.join(CHILD_TIMEOUT_S + SETUP_TIMEOUT_S + 60)
        if self._error is not None:
            raise self._error
        assert self._outcome is not None, "the empty_shared_schema child did not finish"
        return self._outcome

    def stop(self) -> None:
        """At the session's end: a child nobody waited for (the session stopped early) is
        killed, and its database and Redis go as they would after a full run."""
        for child in self._children:
            if child.poll() is None:
                child.kill()
        self._thread.join(60)


# Where the session keeps the child it started in the background (tests/conftest.py).
PROFILE_KEY = pytest.StashKey[BackgroundProfile]()


def run_profile(*paths: str, started: list[subprocess.Popen[str]] | None = None) -> ProfileRun:
    """`pytest -m empty_shared_schema paths...` in a child on a fresh database and Redis; the
    child process is appended to `started`, for whoever may have to stop it early."""
    name = database_name()
    folder = Path(tempfile.mkdtemp(prefix="empty-shared-schema-"))
    create_database(name)
    redis, redis_url = start_redis(folder)
    # The child is a session of its own, also when an xdist worker starts it (tests/parallel.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env |= platform_environment(name, redis_url) | {"PYTHONUNBUFFERED": "1"}
    try:
        with start_setup_platform(env) as setup:
            try:
                setup_output, _ = setup.communicate(timeout=SETUP_TIMEOUT_S)
            finally:
                if setup.poll() is None:
                    setup.kill()
        if setup.returncode:
            return ProfileRun(setup.returncode, f"setup_platform:\n{setup_output}", {})
        with subprocess.Popen(
            [
                sys.executable, "-m", "pytest", "-m", MARK, "-p", "no:cacheprovider", "-q",
                "-rA", *paths,
            ],
            cwd=ROOT, env=env | {CHILD_ENV: "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        ) as child:  # fmt: skip
            if started is not None:
                started.append(child)
            try:
                output, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
            finally:
                if child.poll() is None:
                    child.kill()
        return ProfileRun(child.returncode, output, _outcomes(output))
    finally:
        stop_process(redis)
        drop_database(name)
        shutil.rmtree(folder, ignore_errors=True)
