"""The one per-schema migrator: lock, migrate and verify a schema in its own transaction.

Every path that changes a schema's TaskFlow tables comes here: the fan-out's batches, the
template and shared schemas' upkeep (fan-out and setup_platform alike), setup_platform's upgrade
of tenant schemas and the Alembic command line (env.py). So each takes the same per-schema
advisory lock, the same transaction-local timeouts and search_path, and the same guard.

The owner connection is in autocommit mode and every transaction is written out (BEGIN ...
COMMIT) in as few messages as possible. When the platform's records of the schema are given,
one round trip does it all (the optimistic path): timeouts and search_path, the advisory lock,
the compiled plan from the recorded revision, a guard that fails the transaction unless the
schema was at that revision under the lock and ends at the target, and COMMIT. Otherwise, or
when that guard refuses, the careful path reads the revisions under the lock first (one round
trip), then runs the plan, the Django bookkeeping rows the schema lacks, a guard and COMMIT (a
second). Statements a revision declares non-transactional (CREATE INDEX CONCURRENTLY) run after
the commit. An error anywhere rolls the whole schema back: a schema is never left
half-migrated. Lock timeouts (also waiting for another migrator's advisory lock) and deadlocks
retry with exponential backoff and jitter; a plan that locks two or more tables locks them all
first, in a fixed order (migrations_sqla.table_locks), so that deadlocks are rare.

It never touches `public` (the control plane's schema: TaskFlow tables never go there) and never
writes the public schema's bookkeeping: callers record the Outcome.
"""

from __future__ import annotations

import enum
import functools
import os
import random
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from django import db
from django.conf import settings
from django.utils import timezone
from psycopg import errors, sql

from migrations_sqla import django_state, scripts
from tenants.citus import is_citus
from tenants.cloning import TEMPLATE_SCHEMA, django_digest_sql
from tenants.placement import SHARED_SCHEMA

PLACEHOLDER = b"fanout_schema_placeholder"
# Transaction-local: trigger DDL on a Citus distributed table is refused without it.
CITUS_ALLOW_TRIGGERS = "SET LOCAL citus.enable_unsafe_triggers = on"
LOCK_NAMESPACE = 0x66616E  # "fan": the advisory-lock class of per-schema migration locks
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "5min"
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0

# An array of the schema's invalid indexes among the names its revisions build or drop
# CONCURRENTLY ({names}: a text[] literal, {schema}: a literal), as one value of a SELECT list.
# Run after every schema's non-transactional steps (and before them on the careful path, which
# drops what it finds), so it must stay cheap with thousands of schemas: each name is an
# equality probe of pg_class's (relname, relnamespace) index. A lookup by namespace alone has no index to use and reads every row of pg_class (its
# cost grew with the catalog: most of what a fan-out's index step cost beyond the bare DDL).
INVALID_INDEXES = (
    "ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
    " WHERE c.relname = ANY({names}::name[]) AND c.relnamespace = to_regnamespace({schema})"
    " AND NOT i.indisvalid ORDER BY 1)"
)


# Fails the transaction (a cast error carrying the reason) unless the schema was at {source}
# under the lock, and is now at {target} with the template's Django migrations.
OPTIMISTIC_GUARD = (
    "SELECT CASE WHEN current_setting('fanout.before') = {source}"
    " AND (SELECT version_num FROM {s}.alembic_version) = {target}"
    " AND {digest} = {django} THEN 0"
    # current_setting() is stable, so the failing branch is never folded at plan time
    " ELSE ('fanout guard: was at ' || current_setting('fanout.before'))::int END;"
)


class Result(enum.StrEnum):
    """What became of one schema."""

    MIGRATED = "migrated"
    SKIPPED = "skipped"  # already at the target: nothing was written
    FAILED = "failed"


@dataclass(frozen=True)
class Target:
    """Where schemas go, and how long each statement may wait or run."""

    alembic: str | None  # None: base
    django: str | None  # None: leave the Django bookkeeping alone (platform schemas)
    location: str = ""  # the Alembic script directory; "" is migrations_sqla's
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT

    def revisions(self, django: str | None) -> dict[str, str]:
        out = {"django": django} if django is not None else {}
        if self.alembic is not None:
            out["alembic"] = self.alembic
        return out


@dataclass
class Outcome:
    result: Result = Result.FAILED
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    started_at: datetime = field(default_factory=timezone.now)
    finished_at: datetime | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result != Result.FAILED


class LockTimeout(Exception):
    """The schema's advisory lock or a table lock was not granted within lock_timeout."""


class Deadlock(Exception):
    """PostgreSQL's deadlock detector cancelled the step: traffic (or another writer) held a
    table it needed while waiting for one it held. Nothing was committed; retried with backoff."""


class InvalidIndex(Exception):
    """An index of the schema is still invalid after its non-transactional step ran."""


class ConnectionLost(Exception):
    """The owner connection broke (PostgreSQL restarted, the network went): not the schema's
    fault, so not recorded as its failure; the caller retries once the database is back."""


class AlembicEnvironment(Protocol):
    """What the migrator uses of an Alembic environment (the `alembic.context` of env.py)."""

    def configure(
        self, *, connection: sa.Connection, version_table_schema: str, transactional_ddl: bool
    ) -> None: ...

    def run_migrations(self) -> None: ...

    def get_context(self) -> MigrationContext: ...


def owner_url() -> str:
    """The owner role's URL in SQLAlchemy's psycopg 3 dialect form."""
    url = os.environ.get("MIGRATION_DATABASE_URL") or str(settings.MIGRATION_DATABASE_URL)
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


@functools.cache
def owner_engine() -> sa.Engine:
    """The owner role's engine, for DDL.

    No server-side prepared statements (psycopg's prepare_threshold): these connections change
    tables, and a plan prepared before a change fails after it ("cached plan must not change
    result type") or costs a DEALLOCATE ALL round trip once psycopg sees the DDL.
    """
    return sa.create_engine(
        owner_url(),
        pool_size=2,
        max_overflow=8,
        pool_pre_ping=True,
        connect_args={"prepare_threshold": None},
    )


def check_schema_name(schema: str) -> str:
    """A schema name this platform makes, and never `public`."""
    if schema == "public":
        raise ValueError("public is the control plane's schema: TaskFlow tables never go there")
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"not a schema name this platform makes: {schema!r}")
    return schema


def backoff(attempt: int) -> float:
    """Full jitter: a random wait up to base * 2^attempt, capped, so retries spread out."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))  # noqa: S311


def platform_schemas(conn: sa.Connection) -> list[str]:
    """The template, and the shared RLS schema once it exists: migrated before any tenant."""
    shared = conn.execute(
        sa.text("SELECT to_regnamespace(:s) IS NOT NULL"), {"s": SHARED_SCHEMA}
    ).scalar()
    conn.commit()
    return [TEMPLATE_SCHEMA, *([SHARED_SCHEMA] if shared else [])]


def migrate_schema(
    schema: str,
    *,
    revision: str = "head",
    location: str = "",
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
) -> Outcome:
    """Move one schema's TaskFlow tables to `revision` over a connection of its own.

    The careful path, finishing what an interrupted earlier attempt left (the target's own
    non-transactional statements run again when the schema is already there).
    """
    target = Target(
        alembic=scripts.resolve_revision(location, revision),
        django=None,
        location=location,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
    with owner_engine().connect() as connection:
        return SchemaMigrator(connection, target).migrate(schema, attempted_before=True)


class SchemaMigrator:
    """Migrates schemas one after another over one owner connection (a batch's connection)."""

    def __init__(
        self,
        connection: sa.Connection,
        target: Target,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = self.connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        self.raw: psycopg.Connection = raw
        self.target = target
        self.sleep = sleep
        self._template_applied: set[tuple[str, str]] | None = None
        self._messages: dict[str, bytes] = {}
        self._citus: bool | None = None

    def _on_citus(self) -> bool:
        """is_citus, asked once per migrator: its connection never changes database, and the
        lookup's key (host, port, database read from libpq) cost more than a schema's Python."""
        if self._citus is None:
            self._citus = is_citus(self.raw)
        return self._citus

    # -- public --

    def migrate(
        self,
        schema: str,
        *,
        attempted_before: bool = False,
        recorded: dict[str, str] | None = None,
    ) -> Outcome:
        """Bring `schema` to the target, retrying lock timeouts; never raises for the schema.

        `recorded`: the revisions the platform believes the schema is at (Tenant.revisions);
        when given, one optimistic round trip is tried first. `attempted_before`: an earlier
        attempt may have stopped between its commit and its non-transactional statements, so
        a schema already at the target gets them again. The template's Django tenant apps are
        migrated first when the code has migrations it lacks (its upkeep), under the same lock.
        """
        outcome = Outcome()
        started = time.perf_counter()
        try:
            check_schema_name(schema)
        except ValueError as exc:
            return self._finished(outcome, started, error=str(exc))
        first = 0
        if recorded and not attempted_before:
            try:
                if self._optimistic(schema, recorded, outcome):
                    return self._finished(outcome, started)
            except LockTimeout as exc:  # committed; its index step is retried below
                outcome.error = f"lock timeout ({self.target.lock_timeout}): {exc}"
                attempted_before, first = True, 1
                self.sleep(backoff(0))
            except InvalidIndex as exc:
                # Committed, and an index it declares is invalid (one an earlier interrupted
                # step left, which IF NOT EXISTS kept): the careful path reads the invalid
                # ones first, drops and rebuilds them.
                outcome.error = str(exc)
                attempted_before, first = True, 1
            except Deadlock as exc:  # rolled back: the careful path tries again, after a pause
                outcome.error = f"deadlock: {exc}"
                first = 1
                self.sleep(backoff(0))
        for attempt in range(first, MAX_ATTEMPTS):
            outcome.attempts = attempt + 1
            try:
                self._attempt(schema, outcome, attempted_before=attempted_before or attempt > 0)
                break
            except (LockTimeout, Deadlock) as exc:
                # Also a CREATE INDEX CONCURRENTLY that waited too long for older transactions:
                # the next attempt drops the invalid index it left and builds it again.
                if isinstance(exc, Deadlock):
                    outcome.error = f"deadlock: {exc}"
                else:
                    outcome.error = f"lock timeout ({self.target.lock_timeout}): {exc}"
                if attempt + 1 == MAX_ATTEMPTS:
                    outcome.result = Result.FAILED
                    outcome.error += f" (gave up after {MAX_ATTEMPTS} attempts)"
                    break
                self.sleep(backoff(attempt))
            except ConnectionLost:
                raise
            except Exception as exc:
                if self._connection_lost(exc):
                    raise ConnectionLost(f"{type(exc).__name__}: {exc}".strip()) from exc
                self._rollback()
                outcome.result = Result.FAILED
                outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
                break
        return self._finished(outcome, started)

    def run_alembic(self, schema: str, environment: AlembicEnvironment) -> None:
        """What Alembic's command line asked of `schema`, inside this migrator's transaction.

        The command's own steps (upgrade, downgrade, stamp, current) run under the same lock,
        timeouts and search_path as a run's; an upgrade or downgrade to a named revision is
        guarded to end there, and the non-transactional statements of the revisions it went
        through (or, when it was already there, of that revision) run after the commit.
        Raises on failure: a command line shows the error.
        """
        check_schema_name(schema)
        self._rollback()
        try:
            before = self._begin_and_read(schema, tenant=False)[0].get("alembic") or None
        except errors.LockNotAvailable as exc:
            self._rollback()
            raise LockTimeout(str(exc).strip()) from exc
        try:
            destination = self._run_environment(environment, schema, sync=False)
        except BaseException:
            self._rollback()
            raise
        if not isinstance(destination, str):  # stamp or current: no statements to finish
            return
        after = self._alembic_revision(schema)
        if after == before:
            statements = self._repair_statements(after)
        else:
            statements = scripts.non_transactional_between(self.target.location, before, after)
        self._run_non_transactional(schema, statements)

    # -- the optimistic round trip --

    def _optimistic(self, schema: str, recorded: dict[str, str], outcome: Outcome) -> bool:
        """Lock, migrate from the recorded revisions and commit in one round trip.

        A guard statement makes the transaction fail unless, under the lock, the schema was at
        the recorded revision and ends at the target; then the careful path (read first, retry
        lock timeouts, clear errors) takes over. True when the schema was migrated here.
        """
        source = recorded.get("alembic") or None
        target = self.target
        if (
            source is None
            or target.alembic is None
            or target.django is None
            or recorded.get("django") != target.django
        ):
            return False
        try:
            plan = scripts.plan(target.location, source, target.alembic)
        except Exception:  # records name a revision this script directory lacks
            return False
        if plan.online or plan.is_noop or self._on_citus():
            # On Citus DDL goes one statement per query: the careful path does that.
            return False
        message = self._optimistic_message(source, plan).replace(PLACEHOLDER, schema.encode())
        try:
            cursor = self.raw.execute(message)
        except errors.DeadlockDetected as exc:
            self._rollback()
            raise Deadlock(str(exc).strip()) from exc
        except psycopg.Error as exc:
            if self._connection_lost(exc):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}".strip()) from exc
            self._rollback()
            return False
        outcome.attempts = 1
        outcome.before = dict(recorded)
        try:
            if plan.non_transactional:
                # The transaction left the step's timeouts set for the session and read which
                # of the indexes it drops are there.
                present = _row_of(cursor, INDEX_STEP_COLUMN)[-1]
                self._run_non_transactional(
                    schema, plan.non_transactional, timeouts_set=True, present=present
                )
        except (LockTimeout, InvalidIndex):
            raise  # committed; migrate() retries the index step on the careful path
        except ConnectionLost:
            raise
        except Exception as exc:  # committed; the index step is retried by a later attempt
            self._rollback()
            if plan.non_transactional and not (self.raw.closed or self.raw.broken):
                self.raw.execute(RESET_TIMEOUTS)  # the session's own timeouts again
            outcome.result = Result.FAILED
            outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
            return True
        outcome.result = Result.MIGRATED
        outcome.after = target.revisions(target.django)
        return True

    def _optimistic_message(self, source: str, plan: scripts.Plan) -> bytes:
        """The optimistic transaction for `source`, composed once with a placeholder schema
        name (check_schema_name's names need no quoting, so a byte replace is exact).

        A plan with non-transactional statements also sets their timeouts for the session
        (kept by the COMMIT, undone by a ROLLBACK) and reads which of the indexes they drop
        are there, under the lock: the index step needs no round trip of its own before its
        statements, and sends no DROP INDEX of an index that is not there."""
        cached = self._messages.get(source)
        if cached is not None:
            return cached
        ident = sql.Identifier(PLACEHOLDER.decode())
        before = sql.SQL(
            "SELECT set_config('fanout.before',"
            " coalesce((SELECT version_num FROM {s}.alembic_version), ''), true);"
        ).format(s=ident)
        guard = sql.SQL(OPTIMISTIC_GUARD).format(
            s=ident,
            digest=sql.SQL(django_digest_sql(PLACEHOLDER.decode())),
            source=sql.Literal(source),
            target=sql.Literal(self.target.alembic),
            django=sql.Literal(self.target.django),
        )
        index_step = b""
        if plan.non_transactional:
            index_step = index_step_setup_sql(
                PLACEHOLDER.decode(),
                _dropped_names(plan.non_transactional),
                lock_timeout=self.target.lock_timeout,
                statement_timeout=self.target.statement_timeout,
            ).as_bytes(self.raw)
        message = b"".join(
            (
                self._begin(PLACEHOLDER.decode()).as_bytes(self.raw),
                before.as_bytes(self.raw),
                plan.sql.encode(),
                guard.as_bytes(self.raw),
                index_step,
                b"COMMIT;",
            )
        )
        self._messages[source] = message
        return message

    # -- the careful path: one attempt --

    def _attempt(self, schema: str, outcome: Outcome, *, attempted_before: bool) -> None:
        tenant = self.target.django is not None
        # Migrated when anything was written: Django tenant apps (the template's upkeep or a
        # tenant's heavy path), the Alembic plan, bookkeeping rows or a rebuilt index.
        changed = schema == TEMPLATE_SCHEMA and not tenant and self._migrate_template_apps()
        try:
            before, invalid = self._begin_and_read(schema, tenant=tenant)
        except (errors.LockNotAvailable, errors.QueryCanceled) as exc:
            self._rollback()
            if isinstance(exc, errors.LockNotAvailable):
                raise LockTimeout(str(exc).strip()) from exc
            raise
        outcome.before = before
        if (
            tenant
            and before.get("django") != self.target.django
            and self._needs_tenant_app_migrations(schema)
        ):
            self._rollback()
            with self._session_lock(schema):
                django_state.migrate_tenant_apps(schema)
            changed = True
            before, invalid = self._begin_and_read(schema, tenant=True)
        current = before.get("alembic") or None
        plan = scripts.plan(self.target.location, current, self.target.alembic)
        sync = tenant and before.get("django") != self.target.django
        if plan.is_noop and not sync:
            self._rollback()  # read-only: releases the lock
            repair = self._repair_statements(self.target.alembic) if attempted_before else ()
            rebuild = self._rebuild_statements(invalid)
            self._run_non_transactional(schema, _unique((*repair, *rebuild)), always=bool(invalid))
            outcome.result = Result.MIGRATED if changed or invalid else Result.SKIPPED
            outcome.after = dict(before)  # read after the Django tenant apps, if they ran
            outcome.error = ""
            return
        try:
            if plan.online:
                self._run_online(schema, current, sync=sync)
            else:
                self._run_compiled(schema, plan.sql, sync=sync)
        except errors.LockNotAvailable as exc:
            self._rollback()
            raise LockTimeout(str(exc).strip()) from exc
        except Exception as exc:
            if not _deadlocked(exc):
                raise
            self._rollback()
            raise Deadlock(str(exc).strip().splitlines()[0]) from exc
        statements = (*plan.non_transactional, *self._rebuild_statements(invalid))
        self._run_non_transactional(schema, _unique(statements), always=bool(invalid))
        outcome.result = Result.MIGRATED
        outcome.after = self.target.revisions(
            self.target.django if tenant else before.get("django")
        )
        outcome.error = ""

    def _begin(self, schema: str) -> sql.Composed:
        """BEGIN, the timeouts and search_path (transaction-local), the schema's lock.

        One statement for the settings and the lock: a SELECT list is evaluated in order, and
        lock_timeout is read when a lock wait starts, so the lock waits at most lock_timeout
        (statement_timeout, armed when a statement starts, bounds the statements after it).
        Reading the schema's state stays a statement of its own, after this one: its snapshot
        must be taken once the lock is held, never before the wait."""
        return sql.SQL(
            "BEGIN;"
            "SELECT set_config('lock_timeout', {lock}, true),"
            " set_config('statement_timeout', {stmt}, true),"
            " set_config('search_path', {path}, true),"
            " pg_advisory_xact_lock({ns}, hashtext({schema}));"
        ).format(
            lock=sql.Literal(self.target.lock_timeout),
            stmt=sql.Literal(self.target.statement_timeout),
            path=sql.Literal(f'"{schema}", public'),
            ns=sql.Literal(LOCK_NAMESPACE),
            schema=sql.Literal(schema),
        )

    def _begin_and_read(self, schema: str, *, tenant: bool) -> tuple[dict[str, str], list[str]]:
        """BEGIN, timeouts, search_path, the advisory lock, the schema's revisions and the
        names of its invalid indexes (an interrupted CREATE INDEX CONCURRENTLY), in one go."""
        ident = sql.Identifier(schema)
        begin = self._begin(schema)
        digest = sql.SQL(django_digest_sql(schema))
        invalid = invalid_indexes_sql(schema, self._index_names())
        if tenant:
            # Tenant schemas are clones of the template: both version tables exist.
            read = sql.SQL("SELECT (SELECT version_num FROM {}.alembic_version), {}, {}").format(
                ident, digest, invalid
            )
            row = _last_row(self.raw.execute((begin + read).as_string(self.raw).encode()))
            return _revisions(alembic=row[0], django=row[1], has_alembic=True), list(row[2])
        exists = sql.SQL(
            "SELECT to_regclass({a}) IS NOT NULL, to_regclass({d}) IS NOT NULL, {i}"
        ).format(
            a=sql.Literal(f'"{schema}".alembic_version'),
            d=sql.Literal(f'"{schema}".django_migrations'),
            i=invalid,
        )
        has_alembic, has_django, invalid_names = _last_row(
            self.raw.execute((begin + exists).as_string(self.raw).encode())
        )
        alembic = django = None
        if has_alembic:
            alembic = self.raw.execute(
                sql.SQL("SELECT version_num FROM {}.alembic_version").format(ident)
            ).fetchone()
        if has_django:
            django = self.raw.execute(sql.SQL("SELECT ") + digest).fetchone()
        revisions = _revisions(
            alembic=alembic[0] if alembic else None,
            django=django[0] if django else None,
            has_alembic=bool(has_alembic),
        )
        return revisions, list(invalid_names)

    def _alembic_revision(self, schema: str) -> str | None:
        """The schema's Alembic revision, outside a transaction; None at base."""
        row = self.raw.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".alembic_version',)
        ).fetchone()
        if not row or not row[0]:
            return None
        found = self.raw.execute(
            sql.SQL("SELECT version_num FROM {}.alembic_version").format(sql.Identifier(schema))
        ).fetchone()
        return found[0] if found else None

    def _run_compiled(self, schema: str, plan_sql: str, *, sync: bool) -> None:
        """The plan, the bookkeeping rows, the guard and COMMIT in one round trip."""
        parts = [plan_sql]
        if sync:
            parts.append(django_state.SYNC_SQL.as_string(self.raw))
        parts.append(self._guard(schema, self.target.alembic))
        parts.append("COMMIT;")
        if self._on_citus():
            # A Citus coordinator refuses a multi-statement DDL string on a distributed schema,
            # and passes SET commands on to the workers, not set_config calls. It refuses trigger
            # DDL on distributed tables unless allowed: the revisions' triggers are the
            # platform's own, and history triggers keep the Citus function they call
            # (migrations_sqla.history_triggers).
            self.raw.execute(CITUS_ALLOW_TRIGGERS)
            for statement in scripts.split_statements("\n".join(parts)):
                self.raw.execute(scripts.as_set_local(statement).encode())
            return
        self.raw.execute("\n".join(parts).encode())

    def _run_online(self, schema: str, current: str | None, *, sync: bool) -> None:
        """Alembic's MigrationContext inside the transaction already begun (a migration that
        asked for it, or one the offline mode could not compile); `current` was read under
        the lock."""
        script = scripts.script_directory(self.target.location)
        destination = self.target.alembic or scripts.BASE
        downgrade = scripts.is_downgrade(script, current, self.target.alembic)

        def steps(rev: object, _context: object) -> object:
            if downgrade:
                return script._downgrade_revs(destination, rev)  # type: ignore[arg-type]
            return script._upgrade_revs(destination, rev)  # type: ignore[arg-type]

        with EnvironmentContext(
            scripts.script_config(self.target.location),
            script,
            fn=steps,
            destination_rev=destination,
        ) as environment:
            self._run_environment(environment, schema, sync=sync)

    def _run_environment(
        self, environment: AlembicEnvironment, schema: str, *, sync: bool
    ) -> object:
        """An Alembic environment's migrations in the transaction already begun, then the
        bookkeeping rows, the guard (to the environment's destination when it names one) and
        COMMIT. Returns the destination as the environment was given it."""
        # No SQLAlchemy transaction may be open here: ending one would send COMMIT and end
        # the real one, our BEGIN (with its lock and search_path); this one is logical.
        assert not self.connection.in_transaction()
        with self.connection.begin():
            environment.configure(
                connection=self.connection, version_table_schema=schema, transactional_ddl=True
            )
            destination = environment.get_context().opts.get("destination_rev")
            environment.run_migrations()
            tail = [django_state.SYNC_SQL.as_string(self.raw)] if sync else []
            if isinstance(destination, str):
                named, expected = self._resolve(destination)
                if named:
                    tail.append(self._guard(schema, expected))
            tail.append("COMMIT;")
            self.raw.execute("\n".join(tail).encode())
        return destination

    def _resolve(self, destination: str) -> tuple[bool, str | None]:
        """(True, the revision) an upgrade or downgrade to `destination` ends at, when it
        names one; (False, None) for a relative one ("-1"), which Alembic resolved itself.
        "head" is Alembic's own here (contract steps included): the command line applies every
        revision up to it, unlike a run's "head" (scripts.released_head)."""
        if destination in ("head", "heads"):
            return True, scripts.script_directory(self.target.location).get_current_head()
        try:
            return True, scripts.resolve_revision(self.target.location, destination)
        except Exception:
            return False, None

    def _guard(self, schema: str, alembic: str | None) -> str:
        """A DO block that raises (so nothing commits) unless the schema is at the target."""
        checks = []
        if alembic is not None:  # at base the version table may be gone (offline downgrade)
            ident = sql.Identifier(schema).as_string(self.raw)
            want = sql.Literal(alembic).as_string(self.raw)
            checks.append(
                f"IF (SELECT version_num FROM {ident}.alembic_version) IS DISTINCT FROM {want}"  # noqa: S608 - quoted identifier and literal
                f" THEN RAISE EXCEPTION 'alembic_version is not {alembic} after the plan'; END IF;"
            )
        if self.target.django is not None:
            want = sql.Literal(self.target.django).as_string(self.raw)
            checks.append(
                f"IF {django_digest_sql(schema)} IS DISTINCT FROM {want} THEN RAISE EXCEPTION"
                " 'django_migrations differ from the template after the sync'; END IF;"
            )
        if not checks:
            return ""
        return "DO $fanout_guard$ BEGIN " + " ".join(checks) + " END $fanout_guard$;"

    # -- Django tenant apps (heavy path) --

    def _template_rows(self) -> set[tuple[str, str]]:
        if self._template_applied is None:
            self._template_applied = django_state.applied_migrations(self.raw, TEMPLATE_SCHEMA)
        return self._template_applied

    def _needs_tenant_app_migrations(self, schema: str) -> bool:
        return django_state.needs_tenant_app_migrations(
            self._template_rows(), django_state.applied_migrations(self.raw, schema)
        )

    def _migrate_template_apps(self) -> bool:
        """The template's Django tenant apps to the code's migrations, when it lacks some;
        True when it did."""
        if not django_state.behind_code(django_state.applied_migrations(self.raw, TEMPLATE_SCHEMA)):
            return False
        with self._session_lock(TEMPLATE_SCHEMA):
            django_state.migrate_template()
        self._template_applied = None
        return True

    @contextmanager
    def _session_lock(self, schema: str) -> Iterator[None]:
        """The schema's lock held at session level, for migrate_schemas on Django's connection."""
        key = sql.SQL("{}, hashtext({})").format(sql.Literal(LOCK_NAMESPACE), sql.Literal(schema))
        try:
            self.raw.execute(
                sql.SQL(
                    "SELECT set_config('lock_timeout', {}, false); SELECT pg_advisory_lock({})"
                ).format(sql.Literal(self.target.lock_timeout), key)
            )
        except errors.LockNotAvailable as exc:
            raise LockTimeout(str(exc).strip()) from exc
        finally:
            self.raw.execute("RESET lock_timeout")
        try:
            yield
        finally:
            self.raw.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(key))

    # -- outside a transaction --

    def _repair_statements(self, revision: str | None) -> tuple[str, ...]:
        """Non-transactional statements of the step into `revision` (a retry may lack them)."""
        if revision is None:
            return ()
        script = scripts.script_directory(self.target.location)
        found = script.get_revision(revision)
        parent = found.down_revision if found else None
        if not isinstance(parent, str) and parent is not None:
            return ()
        return scripts.non_transactional_between(self.target.location, parent, revision)

    def _rebuild_statements(self, invalid: Sequence[str]) -> tuple[str, ...]:
        """The declared CREATE INDEX CONCURRENTLY statements of the schema's invalid indexes
        (each revision up to the target); run_non_transactional drops them first."""
        if not invalid:
            return ()
        declared = scripts.declared_indexes(self.target.location, self.target.alembic)
        return tuple(declared[name] for name in invalid if name in declared)

    def _index_names(self) -> tuple[str, ...]:
        """The names an invalid index of a schema can have: those its revisions build or drop
        concurrently."""
        return scripts.concurrent_index_names(self.target.location)

    def _run_non_transactional(
        self,
        schema: str,
        statements: tuple[str, ...],
        *,
        always: bool = False,
        timeouts_set: bool = False,
        present: Collection[str] | None = None,
    ) -> None:
        try:
            run_non_transactional(
                self.raw, schema, statements,
                lock_timeout=self.target.lock_timeout,
                statement_timeout=self.target.statement_timeout, always=always,
                indexes=self._index_names(), timeouts_set=timeouts_set, present=present,
            )  # fmt: skip
        except errors.LockNotAvailable as exc:
            raise LockTimeout(str(exc).strip()) from exc

    def _connection_lost(self, exc: BaseException) -> bool:
        """Whether `exc` came from a broken connection rather than from the schema."""
        lost = (psycopg.OperationalError, sa.exc.OperationalError, db.OperationalError)
        if not isinstance(exc, lost):
            return False
        if self.raw.closed or self.raw.broken:
            return True
        try:
            self._rollback()
            self.raw.execute("SELECT 1")
        except psycopg.Error:
            return True
        return False

    def _rollback(self) -> None:
        if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.raw.execute("ROLLBACK")
        if self.connection.in_transaction():
            self.connection.rollback()

    def _finished(self, outcome: Outcome, started: float, *, error: str = "") -> Outcome:
        if error:
            outcome.result, outcome.error = Result.FAILED, error
        outcome.finished_at = timezone.now()
        outcome.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        return outcome


def run_non_transactional(
    raw: psycopg.Connection[Any],
    schema: str,
    statements: Sequence[str],
    *,
    lock_timeout: str,
    statement_timeout: str,
    indexes: Sequence[str],
    always: bool = False,
    timeouts_set: bool = False,
    present: Collection[str] | None = None,
) -> None:
    """Each statement on `raw` (autocommit, the owner role) with `{schema}` quoted in, after
    dropping the schema's indexes an interrupted CREATE INDEX CONCURRENTLY left invalid, so that
    IF NOT EXISTS cannot keep a broken one. The timeouts hold for these statements only.
    `indexes`: the names looked up (those the revisions build or drop concurrently).
    Raises InvalidIndex when one of them is still invalid afterwards. With no statements it
    does nothing, unless `always` (invalid indexes were seen: drop them).

    The timeouts and the first lookup go in one round trip, the last lookup and the reset in
    another: a schema's index step costs its statements' round trips and two more.

    `timeouts_set`: the caller's transaction set the timeouts for the session already
    (index_step_setup_sql, the optimistic path): no first lookup, so an invalid index that
    IF NOT EXISTS keeps is seen by the last one (InvalidIndex: the caller's careful path drops
    and rebuilds it). `present`: the indexes of the schema, among those the statements drop,
    that were there (read under the schema's lock): a DROP INDEX ... IF EXISTS of any other is
    not sent."""
    if not statements and not always:
        return
    if present is not None:
        statements = [s for s in statements if not _absent_drop(s, present)]
    ident = sql.Identifier(check_schema_name(schema))
    lookup = sql.SQL("SELECT ") + invalid_indexes_sql(schema, indexes)
    setup = sql.SQL(
        "SELECT set_config('lock_timeout', {}, false), set_config('statement_timeout', {}, false);"
    ).format(sql.Literal(lock_timeout), sql.Literal(statement_timeout))
    reset = RESET_TIMEOUTS
    # Never prepared (composed client-side, several statements a message): a prepared
    # statement on this pooled connection would cost the next schema's DDL a DEALLOCATE ALL
    # round trip (psycopg discards them after DDL).
    try:
        found: tuple[Any, ...] = ([],)
        if not timeouts_set:
            found = _last_row(raw.execute((setup + lookup).as_string(raw).encode()))
        for name in found[0]:
            raw.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                    ident, sql.Identifier(name)
                )
            )
        quoted = ident.as_string(raw)
        for statement in statements:
            raw.execute(statement.replace("{schema}", quoted).encode())
        left = _first_row(raw.execute(lookup.as_string(raw).encode() + b";" + reset))[0]
    except BaseException:
        if not raw.closed and not raw.broken:
            raw.execute(reset)
        raise
    if left:
        raise InvalidIndex(f"invalid indexes in {schema} after their step: {', '.join(left)}")


RESET_TIMEOUTS = b"RESET lock_timeout; RESET statement_timeout"
# One index of the schema dropped concurrently if it exists, and nothing else (the statements a
# migrator may leave out when the index is not there).
DROP_IF_EXISTS = re.compile(
    r'^\s*DROP\s+INDEX\s+CONCURRENTLY\s+IF\s+EXISTS\s+\{schema\}\.(?:"(\w+)"|(\w+))'
    r"(?:\s+(?:CASCADE|RESTRICT))?\s*;?\s*$",
    re.IGNORECASE,
)
# The last column of the statement index_step_setup_sql makes (how _optimistic finds its row).
INDEX_STEP_COLUMN = "fanout_index_step_present"


def index_step_setup_sql(
    schema: str, dropped: Sequence[str], *, lock_timeout: str, statement_timeout: str
) -> sql.Composable:
    """In a transaction that ends with COMMIT before an index step: the step's timeouts set for
    the session (a ROLLBACK undoes them), and the names among `dropped` of the schema's indexes
    (relations) that are there, each an equality probe of pg_class's (relname, relnamespace)
    index."""
    return sql.SQL(
        "SELECT set_config('lock_timeout', {lock}, false),"
        " set_config('statement_timeout', {stmt}, false),"
        " ARRAY(SELECT c.relname::text FROM pg_class c WHERE c.relname = ANY({names}::name[])"
        " AND c.relnamespace = to_regnamespace({schema}) ORDER BY 1) AS {column};"
    ).format(
        lock=sql.Literal(lock_timeout),
        stmt=sql.Literal(statement_timeout),
        names=sql.Literal(list(dropped)),
        schema=sql.Literal(schema),
        column=sql.Identifier(INDEX_STEP_COLUMN),
    )


def _dropped_if_exists(statement: str) -> str | None:
    """The index of the schema `statement` drops CONCURRENTLY IF EXISTS (as pg_class names
    it), if that is all it does."""
    found = DROP_IF_EXISTS.match(statement)
    if found is None:
        return None
    return found.group(1) or found.group(2).lower()


def _dropped_names(statements: Sequence[str]) -> list[str]:
    """The indexes of the schema that `statements` drop CONCURRENTLY IF EXISTS."""
    return sorted({name for s in statements if (name := _dropped_if_exists(s))})


def _absent_drop(statement: str, present: Collection[str]) -> bool:
    """Whether `statement` drops, CONCURRENTLY IF EXISTS, an index of the schema not `present`
    (any other statement is sent: one without IF EXISTS fails as it should)."""
    name = _dropped_if_exists(statement)
    return name is not None and name not in present


def invalid_indexes_sql(schema: str, indexes: Sequence[str]) -> sql.Composable:
    """INVALID_INDEXES for `schema` and the index names `indexes` (an empty array: none)."""
    return sql.SQL(INVALID_INDEXES).format(
        names=sql.Literal(list(indexes)), schema=sql.Literal(schema)
    )


def _deadlocked(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL's deadlock error, as psycopg raises it or SQLAlchemy wraps it
    (a plan run online)."""
    return isinstance(exc, errors.DeadlockDetected) or isinstance(
        getattr(exc, "orig", None), errors.DeadlockDetected
    )


def _unique(statements: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(statements))


def _revisions(*, alembic: str | None, django: str | None, has_alembic: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    if django is not None:
        out["django"] = django
    if has_alembic:
        out["alembic"] = alembic or ""
    return out


def _row_of(cursor: psycopg.Cursor[Any], column: str) -> tuple[Any, ...]:
    """The first row of the result of a multi-statement execute whose last column is named
    `column` (the rest are read)."""
    found: tuple[Any, ...] | None = None
    while True:
        description = cursor.description
        if found is None and description and description[-1].name == column:
            row = cursor.fetchone()
            found = tuple(row) if row is not None else None
        if not cursor.nextset():
            break
    assert found is not None, f"no result named {column}"
    return found


def _first_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The first row of the first result of a multi-statement execute (the rest are read)."""
    row = cursor.fetchone()
    while cursor.nextset():
        pass
    assert row is not None
    return tuple(row)


def _last_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The first row of the last result of a multi-statement execute."""
    while cursor.nextset():
        pass
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
