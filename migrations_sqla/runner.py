"""Run the TaskFlow migrations on one named schema, as the owner role.

Migrations are written without schema names: each runs in the schema's own transaction with
`SET LOCAL search_path` to that schema (transaction-local, never a session SET), and Alembic's
version table lives in the schema itself. The script directory is read once per process and
reused, since fan-outs migrate thousands of schemas.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "5min"


def config() -> Config:
    return Config(str(HERE / "alembic.ini"))


@functools.cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None
    return head


def owner_url() -> str:
    """The owner role's URL in SQLAlchemy's psycopg 3 dialect form."""
    url = os.environ.get("MIGRATION_DATABASE_URL") or _django_owner_url()
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def _django_owner_url() -> str:
    from django.conf import settings

    return str(settings.MIGRATION_DATABASE_URL)


@functools.cache
def owner_engine() -> sa.Engine:
    return sa.create_engine(owner_url(), pool_size=2, max_overflow=8, pool_pre_ping=True)


def check_schema_name(schema: str) -> str:
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"not a schema name this platform makes: {schema!r}")
    return schema


@contextmanager
def schema_transaction(
    connection: sa.Connection,
    schema: str,
    *,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
) -> Iterator[sa.Connection]:
    """One transaction on `schema` with migration timeouts, all settings transaction-local."""
    check_schema_name(schema)
    with connection.begin():
        connection.execute(
            sa.text(
                "SELECT set_config('lock_timeout', :lock, true),"
                " set_config('statement_timeout', :stmt, true),"
                " set_config('search_path', :path, true)"
            ),
            {"lock": lock_timeout, "stmt": statement_timeout, "path": f'"{schema}", public'},
        )
        yield connection


def current_revision(connection: sa.Connection, schema: str) -> str | None:
    """The schema's Alembic revision, read straight from its version table (cheap)."""
    check_schema_name(schema)
    exists = connection.execute(
        sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".alembic_version'}
    ).scalar()
    if not exists:
        return None
    query = f'SELECT version_num FROM "{schema}".alembic_version'  # noqa: S608 - name checked above
    return connection.execute(sa.text(query)).scalar()


def migrate_schema(
    connection: sa.Connection,
    schema: str,
    *,
    revision: str = "head",
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
) -> tuple[str | None, str | None]:
    """Upgrade (or downgrade) `schema` to `revision` in one transaction; return (before, after)."""
    script = script_directory()
    with schema_transaction(
        connection, schema, lock_timeout=lock_timeout, statement_timeout=statement_timeout
    ):
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        before = context.get_current_revision()
        target = (
            script.get_revision(revision).revision
            if revision not in ("head", "heads")
            else head_revision()
        )
        if revision != "base" and before == target:
            return before, before

        def steps(rev: Any, _context: Any) -> Any:
            if revision == "base" or (
                before and script.get_revision(target) in _ancestors(script, before)
            ):
                return script._downgrade_revs(revision, rev)
            return script._upgrade_revs(revision, rev)

        with EnvironmentContext(config(), script, fn=steps, destination_rev=revision) as env:
            env.configure(
                connection=connection, version_table_schema=schema, transactional_ddl=True
            )
            env.run_migrations()
        after = MigrationContext.configure(
            connection, opts={"version_table_schema": schema}
        ).get_current_revision()
    return before, after


def _ancestors(script: ScriptDirectory, revision: str) -> set[Any]:
    """Revisions strictly below `revision` (a target among them means a downgrade)."""
    return set(script.iterate_revisions(revision, "base")) - {script.get_revision(revision)}
