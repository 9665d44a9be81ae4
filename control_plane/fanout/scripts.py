"""Alembic scripts as the fan-out runs them: one ScriptDirectory per location, compiled plans.

A plan is the SQL of the steps from one revision to another, generated once per process by
Alembic's offline mode (migrations are written without schema names and run with the schema on a
transaction-local search_path, so the SQL is the same for every schema). Replaying that SQL costs
a round trip per schema instead of Alembic's per-schema reflection and DDL compilation.

A migration that must run online (it reads the database through `op.get_bind()`) says
`fanout_offline = False`; its plan then runs through Alembic's MigrationContext per schema.
Statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY) are declared by the
migration as `non_transactional_upgrade` / `non_transactional_downgrade`: tuples of SQL with a
`{schema}` placeholder, idempotent (IF NOT EXISTS / IF EXISTS), run after the transaction commits.
This module never touches a database.
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from django.conf import settings

from migrations_sqla import runner

BASE = "base"


@dataclass(frozen=True)
class Plan:
    """How to move a schema from `source` to `target`."""

    source: str | None
    target: str | None
    sql: str  # transactional steps, including the version table update; "" when nothing to do
    non_transactional: tuple[str, ...]  # `{schema}` placeholders, run after the commit
    online: bool  # True: run through Alembic online (a migration asked for it, or compiling failed)

    @property
    def is_noop(self) -> bool:
        return self.source == self.target


def default_location() -> str:
    """The fan-out's script directory: FANOUT_SCRIPT_LOCATION, else migrations_sqla's own."""
    return str(getattr(settings, "FANOUT_SCRIPT_LOCATION", "") or "")


@functools.cache
def script_config(location: str) -> Config:
    if not location:
        return runner.config()
    cfg = Config()
    cfg.set_main_option("script_location", location)
    return cfg


@functools.cache
def script_directory(location: str) -> ScriptDirectory:
    """Read once per process and location: parsing the versions folder is the expensive part."""
    if not location:
        return runner.script_directory()
    return ScriptDirectory.from_config(script_config(location))


def resolve_revision(location: str, revision: str) -> str | None:
    """A concrete revision id for "head", "base" or a (partial) revision id; None for base."""
    script = script_directory(location)
    if revision in ("head", "heads", ""):
        return script.get_current_head()
    if revision == BASE:
        return None
    try:
        found = script.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise LookupError(f"no revision {revision!r} in {location or 'migrations_sqla'}")
    return found.revision


_plans: dict[tuple[str, str | None, str | None], Plan] = {}
_plans_lock = threading.Lock()


def plan(location: str, source: str | None, target: str | None) -> Plan:
    """The cached plan from `source` to `target` (either may be None: base)."""
    key = (location, source, target)
    with _plans_lock:
        cached = _plans.get(key)
    if cached is not None:
        return cached
    built = _build_plan(location, source, target)
    with _plans_lock:
        _plans[key] = built
    return built


def _build_plan(location: str, source: str | None, target: str | None) -> Plan:
    if source == target:
        return Plan(source, target, "", (), online=False)
    script = script_directory(location)
    downgrade = runner.is_downgrade(script, source, target)
    steps = runner.scripts_between(script, source, target, downgrade)
    statements = runner.declared_non_transactional(steps, downgrade=downgrade)
    if any(getattr(step.module, "fanout_offline", True) is False for step in steps):
        return Plan(source, target, "", statements, online=True)
    try:
        sql = compile_sql(location, source, target, downgrade)
    except Exception:
        return Plan(source, target, "", statements, online=True)
    return Plan(source, target, sql, statements, online=False)


def compile_sql(location: str, source: str | None, target: str | None, downgrade: bool) -> str:
    """Alembic's offline SQL from `source` to `target`, unqualified, `%` left as written."""
    script = script_directory(location)
    buffer = io.StringIO()

    def steps(_rev: Any, _context: Any) -> Any:
        if downgrade:
            return script._downgrade_revs(target or BASE, source)
        return script._upgrade_revs(target or "head", source)  # type: ignore[arg-type]

    with EnvironmentContext(
        script_config(location),
        script,
        fn=steps,
        as_sql=True,
        starting_rev=source,
        destination_rev=target or BASE,
    ) as env:
        env.configure(
            dialect_name="postgresql",
            output_buffer=buffer,
            transactional_ddl=False,
            dialect_opts={"paramstyle": "named"},
        )
        env.run_migrations()
    return buffer.getvalue()
