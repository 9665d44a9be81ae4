"""The Alembic command line and migrate_schema go through the migrator: one named schema, its
version table in that schema, the per-schema lock, non-transactional steps, `public` refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migrations_sqla.migrator import LOCK_NAMESPACE, Result, migrate_schema
from migrations_sqla.scripts import head_revision, script_directory
from tenants.database_roles import owner_connection
from tenants.ids import ensure_id_sequence
from tests.migrations_sqla.support import (
    TEST_REVISION,
    TEST_REVISION_2,
    effort_index,
    make_script_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def alembic(*args: str) -> subprocess.CompletedProcess[str]:
    """The alembic command line, with migrations_sqla's alembic.ini unless `-c` comes first."""
    config = () if args[:1] == ("-c",) else ("-c", "migrations_sqla/alembic.ini")
    return subprocess.run(
        [sys.executable, "-m", "alembic", *config, *args],
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
    # Alembic's own "head", through the pending contract (the platform's "head" stops below it,
    # migrations_sqla.scripts.released_head): the command line does what it is told.
    current = alembic("-x", f"schema={scratch}", "current")
    assert f"{script_directory('').get_current_head()} (head)" in current.stdout
    down = alembic("-x", f"schema={scratch}", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert tables(scratch) == {"alembic_version"}


def test_migrate_schema_is_idempotent_and_reports_before_and_after(scratch: str) -> None:
    first = migrate_schema(scratch)
    assert (first.result, first.before, first.after) == (
        Result.MIGRATED, {}, {"alembic": head_revision()},
    )  # fmt: skip
    again = migrate_schema(scratch)
    assert (again.result, again.after) == (Result.SKIPPED, {"alembic": head_revision()})


def test_a_schema_name_from_outside_and_public_are_refused() -> None:
    bad = alembic("-x", 'schema=x"; DROP SCHEMA public; --', "upgrade", "head")
    assert bad.returncode != 0
    assert "not a schema name" in bad.stderr
    public = alembic("-x", "schema=public", "upgrade", "head")
    assert public.returncode != 0
    assert "public is the control plane's schema" in public.stderr


def test_command_line_takes_the_schema_lock_and_its_timeout(scratch: str) -> None:
    with owner_connection() as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, scratch))
        up = alembic("-x", f"schema={scratch}", "-x", "lock_timeout=100ms", "upgrade", "head")
    assert up.returncode != 0
    assert "LockTimeout" in up.stderr
    assert tables(scratch) == set()


def test_migrate_schema_runs_declared_concurrent_steps_and_finishes_an_interrupted_one(
    scratch: str, tmp_path: Path
) -> None:
    """A revision's non_transactional_upgrade (CREATE INDEX CONCURRENTLY) runs after its commit;
    a schema already at the revision gets a missing or invalid index built again; a downgrade
    runs non_transactional_downgrade."""
    location = make_script_dir(tmp_path, with_second=True)
    moved = migrate_schema(scratch, revision=TEST_REVISION_2, location=location)
    assert (moved.result, moved.after) == (Result.MIGRATED, {"alembic": TEST_REVISION_2})
    assert effort_index(scratch) is True

    # Interrupted between the commit and the build: no index, or an invalid one.
    with owner_connection(autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{scratch}".tasks_effort')
        # Row-level security is forced on every placement, for the owner too; ids come from
        # the tenant's own sequence (made up here, as the tenant is).
        conn.execute("SELECT set_config('app.tenant_id', '900000003', false)")
        ensure_id_sequence(conn, 900_000_003)
        conn.execute(
            f"INSERT INTO \"{scratch}\".projects (tenant_id, key, name) VALUES (900000003, 'P', 'P')"
        )
        conn.execute(
            f'INSERT INTO "{scratch}".tasks (tenant_id, project_id, title, effort)'
            f" SELECT 900000003, id, t, 5 FROM \"{scratch}\".projects, (VALUES ('a'), ('b')) AS v(t)"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                f'CREATE UNIQUE INDEX CONCURRENTLY tasks_effort ON "{scratch}".tasks (effort)'
            )
        conn.execute("RESET app.tenant_id")  # a pooled connection: leave no tenant behind
    assert effort_index(scratch) is False
    again = migrate_schema(scratch, revision=TEST_REVISION_2, location=location)
    # The invalid index was dropped and built again: written, so migrated (not "skipped").
    assert (again.result, again.after) == (Result.MIGRATED, {"alembic": TEST_REVISION_2})
    assert effort_index(scratch) is True

    down = migrate_schema(scratch, revision=TEST_REVISION, location=location)
    assert (down.before, down.after) == ({"alembic": TEST_REVISION_2}, {"alembic": TEST_REVISION})
    assert effort_index(scratch) is None


def test_command_line_runs_declared_concurrent_steps_as_the_fan_out_does(
    scratch: str, tmp_path: Path
) -> None:
    """The command line builds a revision's CONCURRENTLY index after its commit, and again
    when the schema is already at that revision (an interrupted earlier run)."""
    location = make_script_dir(tmp_path, with_second=True)
    shutil.copy(ROOT / "migrations_sqla" / "env.py", location)
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {location}\nprepend_sys_path = {ROOT}\n")
    command = ("-c", str(ini), "-x", f"schema={scratch}", "upgrade", TEST_REVISION_2)
    up = alembic(*command)
    assert up.returncode == 0, up.stderr
    assert effort_index(scratch) is True
    with owner_connection() as conn:
        conn.execute(f'DROP INDEX "{scratch}".tasks_effort')
    again = alembic(*command)
    assert again.returncode == 0, again.stderr
    assert effort_index(scratch) is True
