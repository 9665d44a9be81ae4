"""Run the TaskFlow migrations on one named schema, as the owner role.

Migrations are written without schema names: each runs in the schema's own transaction with
`SET LOCAL search_path` to that schema (transaction-local, never a session SET), and Alembic's
version table lives in the schema itself. The script directory is read once per process and
reused, since fan-outs migrate thousands of schemas.

Statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY, so that building an
index does not block the schema's writes, which in the shared schema are every rls tenant's)
are declared by a revision as `non_transactional_upgrade` / `non_transactional_downgrade`:
tuples of idempotent SQL with a `{schema}` placeholder, run in autocommit after the revision's
transaction commits, here and by the migration fan-out alike.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from psycopg import sql

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
    script: ScriptDirectory | None = None,
) -> tuple[str | None, str | None]:
    """Upgrade (or downgrade) `schema` to `revision` in one transaction, then run the
    non-transactional statements its revisions declare; return (before, after).

    A schema already at `revision` runs that revision's own non-transactional statements again
    (they are idempotent): what a run interrupted between its commit and an index build left
    undone, the next run finishes. `script` is migrations_sqla's unless given (tests).
    """
    scripts = script or script_directory()
    with schema_transaction(
        connection, schema, lock_timeout=lock_timeout, statement_timeout=statement_timeout
    ):
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        before = context.get_current_revision()
        target = _resolve(scripts, revision)
        downgrade = is_downgrade(scripts, before, target)
        if before == target:
            after = before
            own = scripts.get_revision(target) if target else None
            statements = declared_non_transactional([own] if own else [], downgrade=False)
        else:

            def steps(rev: Any, _context: Any) -> Any:
                if downgrade:
                    return scripts._downgrade_revs(revision, rev)
                return scripts._upgrade_revs(revision, rev)

            with EnvironmentContext(config(), scripts, fn=steps, destination_rev=revision) as env:
                env.configure(
                    connection=connection, version_table_schema=schema, transactional_ddl=True
                )
                env.run_migrations()
            after = MigrationContext.configure(
                connection, opts={"version_table_schema": schema}
            ).get_current_revision()
            applied = scripts_between(scripts, before, after, downgrade)
            statements = declared_non_transactional(applied, downgrade=downgrade)
    if statements:
        with connection.engine.connect() as side:
            raw = side.execution_options(isolation_level="AUTOCOMMIT").connection.driver_connection
            assert raw is not None
            run_non_transactional(
                raw,
                schema,
                statements,
                lock_timeout=lock_timeout,
                statement_timeout=statement_timeout,
            )
    return before, after


def _resolve(script: ScriptDirectory, revision: str) -> str | None:
    """A revision id for "head", "base" (None) or a revision id."""
    if revision in ("head", "heads"):
        return script.get_current_head()
    if revision == "base":
        return None
    found = script.get_revision(revision)
    return found.revision if found is not None else None


def is_downgrade(script: ScriptDirectory, source: str | None, target: str | None) -> bool:
    """Whether going from `source` to `target` (None: base) goes down."""
    if source is None or source == target:
        return False
    if target is None:
        return True
    below = set(script.iterate_revisions(source, "base")) - {script.get_revision(source)}
    return script.get_revision(target) in below


def scripts_between(
    script: ScriptDirectory, source: str | None, target: str | None, downgrade: bool
) -> list[Script]:
    """The revisions a move from `source` to `target` applies (or undoes), newest first."""
    if downgrade:
        assert source is not None
        return [
            s for s in script.iterate_revisions(source, target or "base") if s.revision != target
        ]
    if target is None:
        return []
    return [s for s in script.iterate_revisions(target, source or "base") if s.revision != source]


def declared_non_transactional(steps: Sequence[Script], *, downgrade: bool) -> tuple[str, ...]:
    """The non-transactional statements `steps` (newest first) declare, in the order they run:
    upgrades oldest revision first, downgrades newest first."""
    attribute = "non_transactional_downgrade" if downgrade else "non_transactional_upgrade"
    ordered = steps if downgrade else list(reversed(steps))
    return tuple(statement for step in ordered for statement in getattr(step.module, attribute, ()))


def run_non_transactional(
    raw: psycopg.Connection[Any],
    schema: str,
    statements: Sequence[str],
    *,
    lock_timeout: str,
    statement_timeout: str,
) -> None:
    """Each statement on `raw` (autocommit, the owner role) with `{schema}` quoted in, after
    dropping the schema's indexes an interrupted CREATE INDEX CONCURRENTLY left invalid, so that
    IF NOT EXISTS cannot keep a broken one. The timeouts hold for these statements only."""
    if not statements:
        return
    ident = sql.Identifier(check_schema_name(schema))
    raw.execute(
        "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
        (lock_timeout, statement_timeout),
    )
    try:
        invalid = raw.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND NOT i.indisvalid",
            (schema,),
        ).fetchall()
        for (name,) in invalid:
            raw.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                    ident, sql.Identifier(name)
                )
            )
        quoted = ident.as_string(raw)
        for statement in statements:
            raw.execute(statement.replace("{schema}", quoted).encode())
    finally:
        raw.execute("RESET lock_timeout; RESET statement_timeout")
