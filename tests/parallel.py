"""The test command's processes: pytest-xdist workers, each on a platform of its own.

`platform/dev.sh test` runs the suite with `-n N --dist loadfile -p tests.parallel`: whole test
files go to N worker processes, so one file's Celery worker or browser waits while another
file's tests use the CPU. Tests share a lot with the rest of their session (tenants, queues,
Celery broadcasts, the rate limiter's keys), never with another session, so each xdist worker
is a session of its own: the first (gw0) uses the database and Redis that dev.sh prepared; every
other one gets a database `<test database>_gwN` on the same server, made as dev.sh makes the
test database, a private redis-server and a folder of its own for import uploads. The
controlling process makes them before the workers start and removes them at the end.

A worker learns its own through the environment it inherits: this module is a `-p` plugin, so
each worker imports it before pytest-django loads Django's settings, and it points
DATABASE_URL, REDIS_URL and the rest at that worker's (TASKFLOW_<worker>_<variable>).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
FIRST_WORKER = "gw0"
PREFIX = "TASKFLOW_"
CELERY_VARIABLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
# Part of the extra databases' names: a pytest run started by a test (tests/test_parallel.py)
# names its own apart, or it would drop the databases of the run that started it.
TAG = os.environ.get("TASKFLOW_PARALLEL_TAG", "")


def _variable(worker: str, name: str) -> str:
    return f"{PREFIX}{worker}_{name}"


def _point_this_worker_at_its_platform() -> None:
    """In an xdist worker other than the first: its database and Redis, before Django loads."""
    if not WORKER or WORKER == FIRST_WORKER:
        return
    prefix = f"{PREFIX}{WORKER}_"
    for key, value in list(os.environ.items()):
        if key.startswith(prefix):
            os.environ[key.removeprefix(prefix)] = value
    # The settings derive Celery's broker and results from REDIS_URL. Celery itself prefers
    # these variables to its configuration, so where set they would also defeat a test that
    # points the app at a broker of its own (app.conf.broker_url).
    for key in CELERY_VARIABLES:
        os.environ.pop(key, None)


_point_this_worker_at_its_platform()


@dataclass
class Platforms:
    """What the controlling process made for the workers after the first, to remove at the end."""

    databases: list[str] = field(default_factory=list)
    redis: list[subprocess.Popen[bytes]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)


PLATFORMS_KEY = pytest.StashKey[Platforms]()


def _workers(config: pytest.Config) -> int:
    """How many xdist workers this (controlling) process starts; 0 without xdist."""
    if WORKER or not config.pluginmanager.hasplugin("xdist"):
        return 0
    count = getattr(config.option, "numprocesses", None)
    if not isinstance(count, int) or getattr(config.option, "dist", "no") == "no":
        return 0
    return count


def pytest_configure(config: pytest.Config) -> None:
    count = _workers(config)
    if count < 2:
        return
    # Django is set up here (pytest-django did it while loading the initial conftests).
    from django.conf import settings

    from tests.databases import create_database, platform_environment, start_setup_platform
    from tests.processes import start_redis

    made = Platforms()
    config.stash[PLATFORMS_KEY] = made
    base = settings.DATABASES["default"]["NAME"]
    setups = []
    for number in range(1, count):
        worker, name = f"gw{number}", f"{base}_{TAG}gw{number}"
        create_database(name)
        made.databases.append(name)
        folder = Path(tempfile.mkdtemp(prefix=f"taskflow-{worker}-"))
        made.folders.append(folder)
        redis, redis_url = start_redis(folder)
        made.redis.append(redis)
        # Uploads are kept under the tenant's id, which each database numbers from 1 alike.
        uploads = folder / "imports"
        env = platform_environment(name, redis_url) | {"IMPORT_UPLOAD_DIR": str(uploads)}
        env = {key: value for key, value in env.items() if key not in CELERY_VARIABLES}
        os.environ.update({_variable(worker, key): value for key, value in env.items()})
        setups.append((name, start_setup_platform(env)))
    for name, setup in setups:  # side by side: each one's migrations take a while
        output, _ = setup.communicate(timeout=600)
        if setup.returncode:
            raise pytest.UsageError(f"setup_platform for {name} failed:\n{output}")


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(PLATFORMS_KEY, None)
    if made is None:
        return
    from tests.databases import drop_database
    from tests.processes import stop_process

    for redis in made.redis:
        stop_process(redis)
    for name in made.databases:
        drop_database(name)
    for folder in made.folders:
        shutil.rmtree(folder, ignore_errors=True)
