"""Throw-away copies of the test platform on the same server: a database made as
`platform/dev.sh` makes the test database (init.sql as the superuser, then `manage.py
setup_platform`) with a Redis of its own, for a pytest process that must share nothing with the
session's (tests/empty_shared_schema.py's child, tests/parallel.py's xdist workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from tests.superuser import superuser_connection

ROOT = Path(__file__).resolve().parent.parent
SETUP_TIMEOUT_S = 600


def with_database(url: str, name: str) -> str:
    """`url` (a postgres:// URL) pointing at the database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(name: str) -> None:
    with superuser_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(name: str) -> None:
    """Roles and database as `platform/dev.sh` makes them (init.sql, as the superuser)."""
    drop_database(name)
    database = settings.DATABASES["default"]
    owner, app = urlsplit(settings.MIGRATION_DATABASE_URL), urlsplit(settings.DATABASE_URL)
    subprocess.run(
        [
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", database["HOST"] or "127.0.0.1",
            "-p", str(database["PORT"] or 5432), "-U", os.environ.get("PGSUPERUSER", "postgres"),
            "-d", "postgres", "-v", f"owner_role={owner.username}",
            "-v", f"owner_password={owner.password}", "-v", f"app_role={app.username}",
            "-v", f"app_password={app.password}", "-v", f"db_name={name}",
            "-f", str(ROOT / "platform/postgres/init.sql"),
        ],
        check=True, capture_output=True, text=True, timeout=120,
        env=os.environ | {"PGOPTIONS": "-c client_min_messages=warning"},
    )  # fmt: skip


def platform_environment(name: str, redis_url: str) -> dict[str, str]:
    """The variables that point a process (Django, Celery, the servers tests start) at the
    database `name` and the Redis at `redis_url` instead of the session's."""
    return {
        "DATABASE_URL": with_database(settings.DATABASE_URL, name),
        "MIGRATION_DATABASE_URL": with_database(settings.MIGRATION_DATABASE_URL, name),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }


def start_setup_platform(env: dict[str, str]) -> subprocess.Popen[str]:
    """`manage.py setup_platform` for the database and Redis that `env` names, started."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "setup_platform"],
        cwd=ROOT, env=os.environ | env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
