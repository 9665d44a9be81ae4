"""The Alembic environment migrates one named schema, keeping its version table in that schema."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations_sqla.runner import head_revision, migrate_schema, owner_engine
from tenants.roles import owner_connection

ROOT = Path(__file__).resolve().parents[2]


def alembic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "migrations_sqla/alembic.ini", *args],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True,
    )  # fmt: skip


def tables(schema: str) -> set[str]:
    with owner_connection() as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        }


@pytest.fixture
def scratch(unique: str) -> Iterator[str]:
    name = f"t_alembic_{unique}"
    with owner_connection() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with owner_connection() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_command_line_upgrades_and_downgrades_a_named_schema(scratch: str) -> None:
    up = alembic("-x", f"schema={scratch}", "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert {"projects", "tasks", "comments", "tasks_history", "alembic_version"} <= tables(scratch)
    current = alembic("-x", f"schema={scratch}", "current")
    assert head_revision() in current.stdout
    down = alembic("-x", f"schema={scratch}", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert tables(scratch) == {"alembic_version"}


def test_runner_is_idempotent_and_reports_before_and_after(scratch: str) -> None:
    with owner_engine().connect() as connection:
        assert migrate_schema(connection, scratch) == (None, head_revision())
        assert migrate_schema(connection, scratch) == (head_revision(), head_revision())


def test_a_schema_name_from_outside_is_refused() -> None:
    bad = alembic("-x", 'schema=x"; DROP SCHEMA public; --', "upgrade", "head")
    assert bad.returncode != 0
    assert "not a schema name" in bad.stderr
