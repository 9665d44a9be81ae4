"""One schema's migration: lock, migrate and verify in the schema's own transaction.

The owner connection is in autocommit mode and every transaction is written out (BEGIN ...
COMMIT) in as few messages as possible. When the platform's records of the schema are given,
one round trip does it all: timeouts and search_path (transaction-local), the per-schema
advisory lock, the compiled plan from the recorded revision, a guard that fails the transaction
unless the schema was at that revision under the lock and ends at the target, and COMMIT.
Otherwise, or when that guard refuses, the careful path reads the revisions under the lock first
(one round trip), then runs the plan, the Django bookkeeping rows the schema lacks, a guard and
COMMIT (a second). An error anywhere rolls the whole tenant back: a tenant is never left
half-migrated. Lock timeouts (also waiting for another run's advisory lock) retry with
exponential backoff and jitter. This module never writes the public schema's bookkeeping:
callers record the outcome.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from django.utils import timezone
from psycopg import errors, sql

from control_plane.fanout import django_state, scripts
from control_plane.fanout.models import StepStatus
from migrations_sqla.runner import check_schema_name, is_downgrade, run_non_transactional
from tenants.cloning import TEMPLATE_SCHEMA

PLACEHOLDER = b"fanout_schema_placeholder"
LOCK_NAMESPACE = 0x66616E  # "fan": the advisory-lock class of per-schema migration locks
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0

# Fails the transaction (a cast error carrying the reason) unless the schema was at {source}
# under the lock, and is now at {target} with the template's Django migrations.
OPTIMISTIC_GUARD = (
    "SELECT CASE WHEN current_setting('fanout.before') = {source}"
    " AND (SELECT version_num FROM {s}.alembic_version) = {target}"
    " AND (SELECT substr(encode(sha256(convert_to(coalesce("
    "string_agg(app || '.' || name, ',' ORDER BY app, name), ''), 'UTF8')), 'hex'), 1, 16)"
    " FROM {schema}.django_migrations) = {django} THEN 0"
    # current_setting() is stable, so the failing branch is never folded at plan time
    " ELSE ('fanout guard: was at ' || current_setting('fanout.before'))::int END;"
)
READ_TENANT = (
    "SELECT (SELECT version_num FROM {schema}.alembic_version),"
    " (SELECT substr(encode(sha256(convert_to(coalesce("
    "string_agg(app || '.' || name, ',' ORDER BY app, name), ''), 'UTF8')), 'hex'), 1, 16)"
    " FROM {schema}.django_migrations)"
)
DIGEST = (
    "(SELECT substr(encode(sha256(convert_to(coalesce("
    "string_agg(app || '.' || name, ',' ORDER BY app, name), ''), 'UTF8')), 'hex'), 1, 16)"
    " FROM {schema}.django_migrations)"
)


@dataclass(frozen=True)
class Target:
    """What a run moves schemas to, and how long each statement may wait or run."""

    alembic: str | None
    django: str | None  # None: leave the Django bookkeeping alone (platform schemas)
    location: str = ""
    lock_timeout: str = "5s"
    statement_timeout: str = "5min"

    def revisions(self, django: str | None) -> dict[str, str]:
        out = {"django": django} if django is not None else {}
        if self.alembic is not None:
            out["alembic"] = self.alembic
        return out


@dataclass
class Outcome:
    status: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    started_at: datetime = field(default_factory=timezone.now)
    finished_at: datetime | None = None
    duration_ms: float = 0.0


class LockTimeout(Exception):
    """The schema's advisory lock or a table lock was not granted within lock_timeout."""


def backoff(attempt: int) -> float:
    """Full jitter: a random wait up to base * 2^attempt, capped, so retries spread out."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))  # noqa: S311


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
        when given, one optimistic round trip is tried first.
        """
        outcome = Outcome(status=StepStatus.RUNNING)
        started = time.perf_counter()
        if recorded and not attempted_before and self._optimistic(schema, recorded, outcome):
            outcome.finished_at = timezone.now()
            outcome.duration_ms = round((time.perf_counter() - started) * 1000, 2)
            return outcome
        for attempt in range(MAX_ATTEMPTS):
            outcome.attempts = attempt + 1
            try:
                self._attempt(schema, outcome, attempted_before=attempted_before or attempt > 0)
                break
            except LockTimeout as exc:
                outcome.error = f"lock timeout ({self.target.lock_timeout}): {exc}"
                if attempt + 1 == MAX_ATTEMPTS:
                    outcome.status = StepStatus.FAILED
                    outcome.error += f" (gave up after {MAX_ATTEMPTS} attempts)"
                    break
                self.sleep(backoff(attempt))
            except Exception as exc:
                self._rollback()
                outcome.status = StepStatus.FAILED
                outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
                break
        outcome.finished_at = timezone.now()
        outcome.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        return outcome

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
        if plan.online or plan.is_noop:
            return False
        try:
            message = self._optimistic_message(source, plan.sql).replace(
                PLACEHOLDER, check_schema_name(schema).encode()
            )
        except ValueError:  # not a name this platform makes: the careful path quotes it
            return False
        try:
            self.raw.execute(message)
        except psycopg.Error:
            self._rollback()
            return False
        outcome.attempts = 1
        outcome.before = dict(recorded)
        try:
            self._run_non_transactional(schema, plan.non_transactional)
        except Exception as exc:  # committed; the index step is retried by a later attempt
            self._rollback()
            outcome.status = StepStatus.FAILED
            outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
            return True
        outcome.status = StepStatus.SUCCEEDED
        outcome.after = target.revisions(target.django)
        return True

    def _optimistic_message(self, source: str, plan_sql: str) -> bytes:
        """The optimistic transaction for `source`, composed once with a placeholder schema
        name (platform schema names need no quoting, so a byte replace is exact)."""
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
            schema=ident,
            source=sql.Literal(source),
            target=sql.Literal(self.target.alembic),
            django=sql.Literal(self.target.django),
        )
        message = b"".join(
            (
                self._begin(PLACEHOLDER.decode()).as_bytes(self.raw),
                before.as_bytes(self.raw),
                plan_sql.encode(),
                guard.as_bytes(self.raw),
                b"COMMIT;",
            )
        )
        self._messages[source] = message
        return message

    # -- one attempt --

    def _attempt(self, schema: str, outcome: Outcome, *, attempted_before: bool) -> None:
        tenant = self.target.django is not None
        try:
            before = self._begin_and_read(schema, tenant=tenant)
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
            self._migrate_tenant_apps(schema)
            before = self._begin_and_read(schema, tenant=True)
        current = before.get("alembic") or None
        plan = scripts.plan(self.target.location, current, self.target.alembic)
        sync = tenant and before.get("django") != self.target.django
        if plan.is_noop and not sync:
            self._rollback()  # read-only: releases the lock
            if attempted_before:
                self._run_non_transactional(schema, self._repair_statements())
            outcome.status = StepStatus.SKIPPED
            outcome.after = dict(before)
            outcome.error = ""
            return
        try:
            if plan.online:
                self._run_online(schema, sync=sync)
            else:
                self._run_compiled(schema, plan.sql, sync=sync)
        except errors.LockNotAvailable as exc:
            self._rollback()
            raise LockTimeout(str(exc).strip()) from exc
        self._run_non_transactional(schema, plan.non_transactional)
        outcome.status = StepStatus.SUCCEEDED
        outcome.after = self.target.revisions(
            self.target.django if tenant else before.get("django")
        )
        outcome.error = ""

    def _begin(self, schema: str) -> sql.Composed:
        """BEGIN, the run's timeouts and search_path (transaction-local), the schema's lock."""
        return sql.SQL(
            "BEGIN;"
            "SELECT set_config('lock_timeout', {lock}, true),"
            " set_config('statement_timeout', {stmt}, true),"
            " set_config('search_path', {path}, true);"
            "SELECT pg_advisory_xact_lock({ns}, hashtext({schema}));"
        ).format(
            lock=sql.Literal(self.target.lock_timeout),
            stmt=sql.Literal(self.target.statement_timeout),
            path=sql.Literal(f'"{schema}", public'),
            ns=sql.Literal(LOCK_NAMESPACE),
            schema=sql.Literal(schema),
        )

    def _begin_and_read(self, schema: str, *, tenant: bool) -> dict[str, str]:
        """BEGIN, timeouts, search_path, the advisory lock, and the schema's revisions."""
        ident = sql.Identifier(schema)
        begin = self._begin(schema)
        if tenant:
            # Tenant schemas are clones of the template: both version tables exist.
            read = sql.SQL(READ_TENANT).format(schema=ident)
            row = _last_row(self.raw.execute((begin + read).as_string(self.raw).encode()))
            return _revisions(alembic=row[0], django=row[1], has_alembic=True)
        exists = sql.SQL(
            "SELECT to_regclass({a}) IS NOT NULL, to_regclass({d}) IS NOT NULL"
        ).format(
            a=sql.Literal(f'"{schema}".alembic_version'),
            d=sql.Literal(f'"{schema}".django_migrations'),
        )
        has_alembic, has_django = _last_row(
            self.raw.execute((begin + exists).as_string(self.raw).encode())
        )
        alembic = django = None
        if has_alembic:
            alembic = self.raw.execute(
                sql.SQL("SELECT version_num FROM {}.alembic_version").format(ident)
            ).fetchone()
        if has_django:
            django = self.raw.execute(sql.SQL(DIGEST).format(schema=ident)).fetchone()
        return _revisions(
            alembic=alembic[0] if alembic else None,
            django=django[0] if django else None,
            has_alembic=bool(has_alembic),
        )

    def _run_compiled(self, schema: str, plan_sql: str, *, sync: bool) -> None:
        """The plan, the bookkeeping rows, the guard and COMMIT in one round trip."""
        parts = [plan_sql]
        if sync:
            parts.append(django_state.SYNC_SQL.as_string(self.raw))
        parts.append(self._guard(schema))
        parts.append("COMMIT;")
        self.raw.execute("\n".join(parts).encode())

    def _run_online(self, schema: str, *, sync: bool) -> None:
        """Alembic's MigrationContext inside the transaction already begun (fallback path)."""
        script = scripts.script_directory(self.target.location)
        destination = self.target.alembic or scripts.BASE
        if self.connection.in_transaction():
            self.connection.commit()  # a logical one (autocommit): the real one is our BEGIN
        with self.connection.begin():
            context = MigrationContext.configure(
                self.connection, opts={"version_table_schema": schema}
            )
            before = context.get_current_revision()
            downgrade = is_downgrade(script, before, self.target.alembic)

            def steps(rev: object, _context: object) -> object:
                if downgrade:
                    return script._downgrade_revs(destination, rev)  # type: ignore[arg-type]
                return script._upgrade_revs(destination, rev)  # type: ignore[arg-type]

            with EnvironmentContext(
                scripts.script_config(self.target.location),
                script,
                fn=steps,
                destination_rev=destination,
            ) as env:
                env.configure(
                    connection=self.connection,
                    version_table_schema=schema,
                    transactional_ddl=True,
                )
                env.run_migrations()
            tail = [django_state.SYNC_SQL.as_string(self.raw)] if sync else []
            tail += [self._guard(schema), "COMMIT;"]
            self.raw.execute("\n".join(tail).encode())

    def _guard(self, schema: str) -> str:
        """A DO block that raises (so nothing commits) unless the schema is at the target."""
        checks = []
        ident = sql.Identifier(schema).as_string(self.raw)
        if self.target.alembic is not None:
            want = sql.Literal(self.target.alembic).as_string(self.raw)
            checks.append(
                f"IF (SELECT version_num FROM {ident}.alembic_version) IS DISTINCT FROM {want}"  # noqa: S608 - quoted identifier and literal
                f" THEN RAISE EXCEPTION 'alembic_version is not {self.target.alembic}"
                " after the plan'; END IF;"
            )
        if self.target.django is not None:
            want = sql.Literal(self.target.django).as_string(self.raw)
            digest = DIGEST.format(schema=ident)
            checks.append(
                f"IF {digest} IS DISTINCT FROM {want} THEN RAISE EXCEPTION"
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

    def _migrate_tenant_apps(self, schema: str) -> None:
        """migrate_schemas for one schema under the same lock, held at session level."""
        key = sql.SQL("{}, hashtext({})").format(sql.Literal(LOCK_NAMESPACE), sql.Literal(schema))
        self.raw.execute(sql.SQL("SELECT pg_advisory_lock({})").format(key))
        try:
            django_state.migrate_tenant_apps(schema)
        finally:
            self.raw.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(key))

    # -- outside a transaction --

    def _repair_statements(self) -> tuple[str, ...]:
        """Non-transactional statements of the step into the target (a retry may lack them)."""
        if self.target.alembic is None:
            return ()
        script = scripts.script_directory(self.target.location)
        revision = script.get_revision(self.target.alembic)
        parent = revision.down_revision if revision else None
        if not isinstance(parent, str) and parent is not None:
            return ()
        return scripts.plan(self.target.location, parent, self.target.alembic).non_transactional

    def _run_non_transactional(self, schema: str, statements: tuple[str, ...]) -> None:
        run_non_transactional(
            self.raw, schema, statements,
            lock_timeout=self.target.lock_timeout, statement_timeout=self.target.statement_timeout,
        )  # fmt: skip

    def _rollback(self) -> None:
        if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.raw.execute("ROLLBACK")
        if self.connection.in_transaction():
            self.connection.rollback()


def _revisions(*, alembic: str | None, django: str | None, has_alembic: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    if django is not None:
        out["django"] = django
    if has_alembic:
        out["alembic"] = alembic or ""
    return out


def _last_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The first row of the last result of a multi-statement execute."""
    while cursor.nextset():
        pass
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
