"""Alembic scripts as the migrator runs them: one ScriptDirectory per location, compiled plans.

A plan is the SQL of the steps from one revision to another, generated once per process by
Alembic's offline mode (migrations are written without schema names and run with the schema on a
transaction-local search_path, so the SQL is the same for every schema). Replaying that SQL costs
a round trip per schema instead of Alembic's per-schema reflection and DDL compilation.

A migration that must run online (it reads the database through `op.get_bind()`) says
`fanout_offline = False`; its plan then runs through Alembic's MigrationContext per schema.
Statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY, so that building an
index does not block the schema's writes, which in the shared schema are every rls tenant's)
are declared by the migration as `non_transactional_upgrade` / `non_transactional_downgrade`:
tuples of SQL with a `{schema}` placeholder, idempotent (IF NOT EXISTS / IF EXISTS), run after
the transaction commits. This module never touches a database.
"""

from __future__ import annotations

import functools
import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.util.exc import CommandError
from django.conf import settings

from migrations_sqla import table_locks
from tenants.local_settings import SETTINGS

HERE = Path(__file__).resolve().parent
BASE = "base"


@dataclass(frozen=True)
class Plan:
    """How to move a schema from `source` to `target`."""

    source: str | None
    target: str | None
    sql: str  # transactional steps, including the version table update; "" when nothing to do
    non_transactional: tuple[str, ...]  # `{schema}` placeholders, run after the commit
    online: bool  # True: run through Alembic online (a migration asked for it, or compiling failed)
    locked_tables: tuple[
        str, ...
    ] = ()  # locked up front, in this order (migrations_sqla.table_locks)

    @property
    def is_noop(self) -> bool:
        return self.source == self.target


def default_location() -> str:
    """The script directory runs apply: FANOUT_SCRIPT_LOCATION, else migrations_sqla's own."""
    return str(getattr(settings, "FANOUT_SCRIPT_LOCATION", "") or "")


@functools.cache
def script_config(location: str = "") -> Config:
    """The Alembic configuration of `location`; "" is migrations_sqla's alembic.ini."""
    if not location:
        return Config(str(HERE / "alembic.ini"))
    cfg = Config()
    cfg.set_main_option("script_location", location)
    return cfg


@functools.cache
def script_directory(location: str = "") -> ScriptDirectory:
    """Read once per process and location: parsing the versions folder is the expensive part."""
    return ScriptDirectory.from_config(script_config(location))


def head_revision(location: str = "") -> str:
    """What "head" means to runs: the newest revision that is not a pending contract step."""
    head = released_head(location)
    assert head is not None
    return head


def released_head(location: str = "") -> str | None:
    """The newest revision below the oldest pending contract step (`contract_step = True`).

    A contract step drops what old code still reads, so no ordinary run, setup_platform or
    onboarding ever reaches it by asking for "head": the evolution's contract phase names it
    (control_plane.evolution), once its gate holds. Revisions a later release stacks on a
    pending contract step stay out of "head" with it: "head" never applies a contract on the
    way. A release marks the contract done everywhere with `contract_released = True` in each
    of its steps; from then on they are ordinary revisions of "head" (a schema the contract
    phase missed, a restored one, gets them from any run).
    """
    script = script_directory(location)
    head = script.get_current_head()
    if head is None:
        return None
    released: str | None = head
    for revision in script.iterate_revisions(head, "base"):  # newest first
        if _pending_contract(revision):
            parent = revision.down_revision
            released = parent if isinstance(parent, str) else None
    return released


def pending_contract_steps(location: str = "") -> list[Script]:
    """The revisions above the released head, oldest first (not applied by "head"): the
    pending contract steps, and whatever a later release stacked on them."""
    script = script_directory(location)
    released = released_head(location)
    head = script.get_current_head()
    if head is None or head == released:
        return []
    above = script.iterate_revisions(head, released or "base")
    return [step for step in reversed(list(above)) if step.revision != released]


def _pending_contract(revision: Script) -> bool:
    module = revision.module
    return getattr(module, "contract_step", False) is True and not getattr(
        module, "contract_released", False
    )


def resolve_revision(location: str, revision: str) -> str | None:
    """A concrete revision id for "head", "base" or a (partial) revision id; None for base."""
    script = script_directory(location)
    if revision in ("head", "heads", ""):
        return released_head(location)
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
    downgrade = is_downgrade(script, source, target)
    steps = scripts_between(script, source, target, downgrade)
    statements = declared_non_transactional(steps, downgrade=downgrade)
    if any(getattr(step.module, "fanout_offline", True) is False for step in steps):
        return Plan(source, target, "", statements, online=True)
    try:
        sql = compile_sql(location, source, target, downgrade)
    except Exception:
        return Plan(source, target, "", statements, online=True)
    # Two or more tables: all locked first, in one statement and a fixed order (table_locks).
    lock = table_locks.lock_statement(sql)
    locked = table_locks.tables_and_mode(sql)[0] if lock else ()
    return Plan(source, target, lock + sql, statements, online=False, locked_tables=locked)


def compile_sql(location: str, source: str | None, target: str | None, downgrade: bool) -> str:
    """Alembic's offline SQL from `source` to `target`, unqualified, `%` left as written."""
    buffer = io.StringIO()
    _compile(location, source, target, downgrade, buffer)
    return buffer.getvalue()


def split_statements(text: str) -> list[str]:
    """The statements of a multi-statement string, one each (dollar-quoted bodies kept whole)."""
    import sqlparse  # Django's own dependency; only Citus-mode paths and checks need it

    return [s for s in sqlparse.split(text) if s.strip(" ;\n")]


# A revision's `SELECT set_config('app.<name>', '<value>', true)`, alone in its statement.
APP_SET_CONFIG = re.compile(
    r"^\s*SELECT\s+set_config\(\s*'(app\.[a-z_]+)'\s*,\s*'([^']*)'\s*,\s*true\s*\)\s*;?\s*$",
    re.IGNORECASE,
)


def as_set_local(statement: str) -> str:
    """A revision's transaction-local `set_config` of an `app.*` setting as `SET LOCAL`, which
    Citus sends on to the workers (a set_config call it does not: there history would not
    stand down, policies would see no tenant); any other statement as it is."""
    match = APP_SET_CONFIG.match(statement)
    if match is None or match.group(1) not in SETTINGS:
        return statement
    # The value holds no quote (the pattern's): it stands as the literal it was.
    return f"SET LOCAL {match.group(1)} = '{match.group(2)}'"


class _Executions(io.StringIO):
    """An output buffer that keeps each write apart: offline Alembic writes one per execution."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        if text.strip():
            self.writes.append(text.strip())
        return len(text)


@dataclass(frozen=True)
class MultiStatement:
    """One execution of a revision that sends several statements in one string."""

    revision: str
    direction: str
    statements: int
    start: str


def multi_statement_executions(location: str = "") -> list[MultiStatement]:
    """Each execution (an `op.execute` of several statements, say) of every revision that sends
    more than one statement in one string: a Citus coordinator refuses such a string on a
    distributed schema. Steps that must run online (`fanout_offline = False`, or that read the
    database through `op.get_bind()`) are not compiled, so not seen here."""
    script = script_directory(location)
    found = []
    for revision in script.walk_revisions():
        if getattr(revision.module, "fanout_offline", True) is False:
            continue
        down = revision.down_revision
        if isinstance(down, tuple | list):
            continue  # a merge point runs nothing of its own
        for direction, source, target in (
            ("upgrade", down, revision.revision),
            ("downgrade", revision.revision, down),
        ):
            buffer = _Executions()
            try:
                _compile(location, source, target, direction == "downgrade", buffer)
            except Exception:  # noqa: S112 - reads the database: runs online, as plan() does
                continue
            for text in buffer.writes:
                if "alembic_version" in text:
                    continue  # Alembic's own bookkeeping
                statements = split_statements(text)
                if len(statements) > 1:
                    found.append(
                        MultiStatement(
                            revision.revision,
                            direction,
                            len(statements),
                            " ".join(statements[0].split())[:80],
                        )
                    )
    return found


def _compile(
    location: str, source: str | None, target: str | None, downgrade: bool, buffer: io.StringIO
) -> None:
    script = script_directory(location)

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


def non_transactional_between(
    location: str, source: str | None, target: str | None
) -> tuple[str, ...]:
    """The non-transactional statements of a move from `source` to `target`, in running order."""
    script = script_directory(location)
    downgrade = is_downgrade(script, source, target)
    return declared_non_transactional(
        scripts_between(script, source, target, downgrade), downgrade=downgrade
    )


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
    declared = [statement for step in ordered for statement in getattr(step.module, attribute, ())]
    return tuple(_without_indexes_dropped_later(declared))


def _without_indexes_dropped_later(statements: Sequence[str]) -> list[str]:
    """`statements` less each CREATE INDEX CONCURRENTLY whose index a later statement drops.

    A plan over several revisions runs its transaction (every revision's) before these, so an
    index one revision builds and a later one replaces may name a column the transaction has
    already dropped (0008's due_date sort key, on a run through the contract 0007c): an index
    built only to be dropped is neither built nor dropped, whatever it names."""
    dropped_after: dict[int, set[str]] = {}
    later: set[str] = set()
    for i in range(len(statements) - 1, -1, -1):
        dropped_after[i] = set(later)
        match = DROP_INDEX.match(statements[i])
        if match:
            later.add(match.group(1))
    kept = []
    for i, statement in enumerate(statements):
        built = CREATE_INDEX.match(statement)
        if built and built.group(1) in dropped_after[i]:
            continue
        kept.append(statement)
    return kept


CREATE_INDEX = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?",
    re.IGNORECASE,
)
DROP_INDEX = re.compile(
    r"^\s*DROP\s+INDEX\s+CONCURRENTLY\s+(?:IF\s+EXISTS\s+)?(?:\{schema\}\.)?\"?(\w+)\"?",
    re.IGNORECASE,
)


@functools.cache
def declared_indexes(location: str, target: str | None) -> dict[str, str]:
    """Index name -> the CREATE INDEX CONCURRENTLY statement that builds it, for every index the
    revisions up to `target` declare as a non-transactional step (a later one wins)."""
    out: dict[str, str] = {}
    for statement in non_transactional_between(location, None, target):
        match = CREATE_INDEX.match(statement)
        if match:
            out[match.group(1)] = statement
    return out


@functools.cache
def concurrent_index_names(location: str) -> tuple[str, ...]:
    """Every index a revision of `location` builds or drops CONCURRENTLY, up or down: the only
    indexes a migrator's non-transactional step can leave invalid (an interrupted CREATE or DROP
    INDEX CONCURRENTLY), so the only names it looks up, each through pg_class's (relname,
    relnamespace) index, whatever the number of schemas in the catalog."""
    names: set[str] = set()
    for revision in script_directory(location).walk_revisions():
        for attribute in ("non_transactional_upgrade", "non_transactional_downgrade"):
            for statement in getattr(revision.module, attribute, ()):
                match = CREATE_INDEX.match(statement) or DROP_INDEX.match(statement)
                if match:
                    names.add(match.group(1))
    return tuple(sorted(names))
