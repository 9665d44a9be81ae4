"""The Alembic environment migrates one named schema, keeping its version table in that schema."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from control_plane.fanout.scripts import script_directory
from migrations_sqla.runner import head_revision, migrate_schema, owner_engine
from tenants.database_roles import owner_connection
from tests.fanout.support import TEST_REVISION, TEST_REVISION_2, make_script_dir

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


def effort_index(schema: str) -> bool | None:
    """Whether the schema's tasks_effort index is valid; None when there is none."""
    with owner_connection() as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'tasks_effort'",
            (schema,),
        ).fetchone()
    return None if row is None else bool(row[0])


def test_runner_runs_declared_concurrent_steps_and_finishes_an_interrupted_one(
    scratch: str, tmp_path: Path
) -> None:
    """A revision's non_transactional_upgrade (CREATE INDEX CONCURRENTLY) runs after its commit
    here too, as in the fan-out; a schema already at the revision gets a missing or invalid
    index built again; a downgrade runs non_transactional_downgrade."""
    script = script_directory(make_script_dir(tmp_path, with_second=True))
    with owner_engine().connect() as connection:
        moved = migrate_schema(connection, scratch, revision=TEST_REVISION_2, script=script)
        assert moved == (None, TEST_REVISION_2)
        assert effort_index(scratch) is True

        # Interrupted between the commit and the build: no index, or an invalid one.
        with owner_connection(autocommit=True) as conn:
            conn.execute(f'DROP INDEX "{scratch}".tasks_effort')
            conn.execute(
                f"INSERT INTO \"{scratch}\".projects (tenant_id, key, name) VALUES (1, 'P', 'P')"
            )
            conn.execute(
                f'INSERT INTO "{scratch}".tasks (tenant_id, project_id, title, effort)'
                f" SELECT 1, id, t, 5 FROM \"{scratch}\".projects, (VALUES ('a'), ('b')) AS v(t)"
            )
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute(
                    f'CREATE UNIQUE INDEX CONCURRENTLY tasks_effort ON "{scratch}".tasks (effort)'
                )
        assert effort_index(scratch) is False
        again = migrate_schema(connection, scratch, revision=TEST_REVISION_2, script=script)
        assert again == (TEST_REVISION_2, TEST_REVISION_2)
        assert effort_index(scratch) is True

        down = migrate_schema(connection, scratch, revision=TEST_REVISION, script=script)
        assert down == (TEST_REVISION_2, TEST_REVISION)
        assert effort_index(scratch) is None
