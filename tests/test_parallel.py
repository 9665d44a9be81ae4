"""The test command's xdist workers each run on a platform of their own (tests/parallel.py): a
child pytest over two workers reports what each one sees. Real PostgreSQL and Redis; the second
worker's database and redis-server are made before it starts and gone after the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.processes import ROOT
from tests.superuser import superuser_connection

pytestmark = pytest.mark.worker  # the child makes a database and runs setup_platform on it


def test_each_worker_has_its_own_database_and_redis_and_they_are_gone_afterwards(
    tmp_path: Path,
) -> None:
    base = settings.DATABASES["default"]["NAME"]
    # Its extra database is named apart from this run's own (`<base>_gw1` may be one of them).
    tag = f"probe{os.getpid()}_"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    child = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "tests.parallel", "-n", "2", "--dist",
            "loadfile", "--no-loadscope-reorder", "-p", "no:cacheprovider", "-q",
            "tests/parallel_probe/probe_first.py", "tests/parallel_probe/probe_second.py",
        ],
        cwd=ROOT, env=env | {"PARALLEL_PROBE_DIR": str(tmp_path), "TASKFLOW_PARALLEL_TAG": tag},
        capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout + child.stderr
    first, second = (json.loads((tmp_path / f"{w}.json").read_text()) for w in ("gw0", "gw1"))
    assert first["database"] == base  # the first worker: the database dev.sh prepared
    assert second["database"] == f"{base}_{tag}gw1"  # the second: one made for it, set up
    assert second["platform_tenants"] == 1  # setup_platform made the public tenant there
    assert first["redis_url"] != second["redis_url"]
    assert second["broker_url"] == second["redis_url"]  # its Celery messages stay in its Redis
    assert first["upload_dir"] != second["upload_dir"]  # uploads are kept by tenant id
    # Each worker's mark is still its own: neither Redis saw the other's.
    assert (first["redis_mark"], second["redis_mark"]) == ("gw0", "gw1")
    with superuser_connection() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (f"{base}_{tag}gw1",)
        ).fetchone()
    assert left == (0,)
