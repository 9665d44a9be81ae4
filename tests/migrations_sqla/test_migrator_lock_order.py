"""A migration step that locks two tables, against traffic that holds one and then needs the
other: the step's tables are locked up front in a fixed order, and a step that still loses a
deadlock is retried.

The step (TEST_REVISION here) alters `tasks`, then `projects`; the fixed order is sorted:
`projects`, `tasks`. Traffic is a superuser transaction reading the two tables one after the
other, whose own deadlock timeout is long, so PostgreSQL's detector always cancels the
migrator's side of a cycle (the side a real request would not retry): the tests never depend on
which process's timer fires first. Each waits for the migrator to be blocked on a lock (read from
pg_locks, with a generous deadline) before the traffic takes its second table; nothing is timed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from migrations_sqla import scripts, table_locks
from migrations_sqla.migrator import Outcome, Result, SchemaMigrator, Target, owner_engine
from tenants.database_roles import owner_connection
from tenants.distribution import distribute_schema
from tenants.moving import schema_node
from tests.migrations_sqla.support import BASE_REVISION, TEST_REVISION, make_script_dir
from tests.superuser import superuser_connection

pytestmark = pytest.mark.usefixtures("committed")

TWO_TABLES = '''"""Test revision: a column on tasks, then one on projects (two tables, in that order).

Revision ID: {revision}
Revises: {down_revision}
"""

from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN lock_order_a integer")
    op.execute("ALTER TABLE projects ADD COLUMN lock_order_b integer")


def downgrade() -> None:
    op.execute("ALTER TABLE projects DROP COLUMN lock_order_b")
    op.execute("ALTER TABLE tasks DROP COLUMN lock_order_a")
'''

# One table in two modes: the index takes SHARE, the column ACCESS EXCLUSIVE (a lock upgrade).
ONE_TABLE_TWO_MODES = TWO_TABLES.replace(
    """    op.execute("ALTER TABLE tasks ADD COLUMN lock_order_a integer")
    op.execute("ALTER TABLE projects ADD COLUMN lock_order_b integer")""",
    """    op.execute("CREATE INDEX lock_order_title ON tasks (title)")
    op.execute("ALTER TABLE tasks ADD COLUMN lock_order_a integer")""",
).replace(
    """    op.execute("ALTER TABLE projects DROP COLUMN lock_order_b")
    op.execute("ALTER TABLE tasks DROP COLUMN lock_order_a")""",
    """    op.execute("ALTER TABLE tasks DROP COLUMN lock_order_a")
    op.execute("DROP INDEX lock_order_title")""",
)

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def two_table_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    location = make_script_dir(tmp_path_factory.mktemp("two_tables"))
    revision = Path(location) / "versions" / f"{TEST_REVISION}_estimate.py"
    revision.write_text(
        TWO_TABLES.replace("{revision}", TEST_REVISION).replace("{down_revision}", BASE_REVISION)
    )
    return location


@pytest.fixture(scope="module")
def upgrade_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    location = make_script_dir(tmp_path_factory.mktemp("one_table_two_modes"))
    revision = Path(location) / "versions" / f"{TEST_REVISION}_estimate.py"
    body = ONE_TABLE_TWO_MODES.replace("{revision}", TEST_REVISION)
    revision.write_text(body.replace("{down_revision}", BASE_REVISION))
    return location


@contextmanager
def traffic() -> Iterator[psycopg.Connection]:
    """A transaction of 'traffic' that never runs the deadlock detector first."""
    with superuser_connection(settings.DATABASES["default"]["NAME"]) as conn:
        conn.execute("SET deadlock_timeout = '10min'")
        conn.autocommit = False
        try:
            yield conn
        finally:
            conn.rollback()


def read(conn: psycopg.Connection, schema: str, table: str) -> None:
    conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    )


def write(conn: psycopg.Connection, schema: str, table: str) -> None:
    """A write's table lock (ROW EXCLUSIVE), whatever rows there are."""
    conn.execute(
        sql.SQL("UPDATE {}.{} SET id = id WHERE false").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
    )


def wait_until_blocked(watcher: psycopg.Connection, pid: int, thread: threading.Thread) -> None:
    """Until backend `pid` waits for a lock (or the migration ended without waiting)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and thread.is_alive():
        row = watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the migration never waited for the traffic's lock")


def migrate_against(
    tenant,
    location: str,
    first: str,
    second: str,
    then: Callable[[psycopg.Connection, str, str], None] = read,
) -> tuple[Outcome, list[float], list[str]]:
    """Traffic reads `first`; the migration starts and blocks on it; traffic then reads
    `second` (or does `then` to it) and commits. Returns the migration's outcome, its backoff waits and what the
    traffic saw go wrong (nothing, unless it was chosen as a deadlock's victim)."""
    schema = tenant.schema_name
    target = Target(
        alembic=TEST_REVISION,
        django=tenant.revisions["django"],
        location=location,
        lock_timeout="60s",
    )
    waits: list[float] = []
    outcomes: list[Outcome] = []
    traffic_errors: list[str] = []
    with owner_engine().connect() as conn, traffic() as requests:
        migrator = SchemaMigrator(conn, target, sleep=waits.append)
        pid = migrator.raw.info.backend_pid
        read(requests, schema, first)
        thread = threading.Thread(target=lambda: outcomes.append(migrator.migrate(schema)))
        thread.start()
        try:
            with superuser_connection(settings.DATABASES["default"]["NAME"]) as watcher:
                wait_until_blocked(watcher, pid, thread)
            try:
                then(requests, schema, second)
                requests.commit()
            except psycopg.Error as exc:
                traffic_errors.append(f"{type(exc).__name__}: {exc}")
                requests.rollback()
        finally:
            thread.join(timeout=DEADLINE_S * 2)
    assert outcomes, "the migration did not finish"
    return outcomes[0], waits, traffic_errors


def columns_added(schema: str) -> set[str]:
    with superuser_connection(settings.DATABASES["default"]["NAME"]) as conn:
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE NOT attisdropped AND attrelid IN"
            " (to_regclass(%s), to_regclass(%s)) AND attname LIKE 'lock_order_%%'",
            (f'"{schema}".tasks', f'"{schema}".projects'),
        ).fetchall()
    return {str(name) for (name,) in rows}


def test_a_plan_over_two_tables_locks_them_first_in_sorted_order(two_table_location) -> None:
    plan = scripts.plan(two_table_location, BASE_REVISION, TEST_REVISION)
    assert plan.locked_tables == ("projects", "tasks")
    assert plan.sql.startswith('LOCK TABLE "projects", "tasks" IN ACCESS EXCLUSIVE MODE;')
    # One table in one mode: nothing to order, nothing to upgrade.
    assert scripts.plan("", "0007", "0008").locked_tables == ()
    # The expand's rollback builds indexes on tasks, then alters it: locked first, as strong as
    # the strongest (no lock upgrade while traffic holds the table).
    rollback = scripts.plan("", "0008", "0006")
    assert rollback.locked_tables == ("tasks",)
    assert rollback.sql.startswith('LOCK TABLE "tasks" IN ACCESS EXCLUSIVE MODE;')


def test_the_lock_names_tables_that_exist_before_the_plan_in_a_mode_covering_its_locks() -> None:
    plan_sql = """
        CREATE TABLE fresh (id integer);
        ALTER TABLE fresh ADD COLUMN x integer;
        CREATE INDEX tasks_title ON tasks (title);
        CREATE TRIGGER audit AFTER INSERT ON comments
          FOR EACH STATEMENT EXECUTE FUNCTION public.audit();
        UPDATE projects SET name = 'x; ALTER TABLE quoted ADD COLUMN q integer';
        INSERT INTO alembic_version (version_num) VALUES ('x');
        ALTER TABLE public.elsewhere ADD COLUMN y integer;
        DO $do$ BEGIN EXECUTE 'ALTER TABLE hidden ADD COLUMN z integer'; END $do$;
        -- ALTER TABLE commented ADD COLUMN c integer
    """
    assert table_locks.tables_and_mode(plan_sql) == (
        ("comments", "projects", "tasks"),
        table_locks.SHARE_ROW_EXCLUSIVE,
    )
    dml = "UPDATE tasks SET title = title; DELETE FROM comments WHERE false;"
    assert table_locks.lock_statement(dml) == (
        'LOCK TABLE "comments", "tasks" IN ROW EXCLUSIVE MODE;\n'
    )
    assert table_locks.lock_statement("ALTER TABLE tasks ADD COLUMN a integer;") == ""
    assert table_locks.lock_statement(
        "CREATE INDEX t ON tasks (title); ALTER TABLE tasks ADD COLUMN a integer;"
    ) == ('LOCK TABLE "tasks" IN ACCESS EXCLUSIVE MODE;\n')
    # 0006 changes every TaskFlow table: all six locked first.
    assert scripts.plan("", "0005", "0006").locked_tables == (
        "comments", "comments_history", "projects", "projects_history", "tasks", "tasks_history",
    )  # fmt: skip


def test_traffic_in_the_fixed_order_never_deadlocks_with_the_step(
    tenants_at_base: Callable[[int], list], two_table_location: str
) -> None:
    """Traffic holds `projects` and then needs `tasks`, while the step (which alters `tasks`
    first) runs. Taking its tables one statement at a time, the step would hold `tasks` while
    waiting for `projects`: a deadlock, and the schema failed. Locking both first, in order, it
    waits for `projects` holding nothing; the traffic finishes, then the step runs, once."""
    (tenant,) = tenants_at_base(1)
    outcome, waits, traffic_errors = migrate_against(
        tenant, two_table_location, "projects", "tasks"
    )
    assert traffic_errors == []
    assert outcome.result == Result.MIGRATED, outcome.error
    assert (outcome.attempts, waits) == (1, [])
    assert columns_added(tenant.schema_name) == {"lock_order_a", "lock_order_b"}


def test_a_step_that_loses_a_deadlock_is_retried_and_migrates(
    tenants_at_base: Callable[[int], list], two_table_location: str
) -> None:
    """Traffic in the other order (`tasks`, then `projects`) can still close a cycle with the
    step's LOCK, which holds `projects` while it waits for `tasks`: the detector cancels the
    step, the traffic goes on, and the step is tried again after a backoff."""
    (tenant,) = tenants_at_base(1)
    outcome, waits, traffic_errors = migrate_against(
        tenant, two_table_location, "tasks", "projects"
    )
    assert traffic_errors == []
    assert outcome.result == Result.MIGRATED, outcome.error
    assert outcome.error == ""
    assert outcome.attempts == 2
    assert len(waits) == 1
    assert columns_added(tenant.schema_name) == {"lock_order_a", "lock_order_b"}


@pytest.mark.citus
def test_on_citus_the_upfront_lock_holds_a_distributed_schemas_tables_and_the_step_migrates(
    tenants_at_base: Callable[[int], list], two_table_location: str
) -> None:
    """On a distributed tenant schema (its tables single-shard tables on a worker) the plan's
    `LOCK TABLE "projects", "tasks"` is taken on the coordinator's tables, which traffic reading
    them holds too: the step waits for the traffic holding nothing, then runs its DDL one
    statement per query, and both columns reach the worker's shards."""
    (tenant,) = tenants_at_base(1)
    with owner_connection(autocommit=True) as conn:
        distribute_schema(conn, tenant.schema_name)
        assert schema_node(conn, tenant.schema_name) is not None
    outcome, waits, traffic_errors = migrate_against(
        tenant, two_table_location, "projects", "tasks"
    )
    assert traffic_errors == []
    assert outcome.result == Result.MIGRATED, outcome.error
    assert (outcome.attempts, waits) == (1, [])
    assert columns_added(tenant.schema_name) == {"lock_order_a", "lock_order_b"}
    with owner_connection() as conn:
        on_shards = conn.execute(
            "SELECT result FROM run_command_on_placements(%s, $$SELECT count(*) FROM"
            " pg_attribute WHERE attrelid = '%%s'::regclass AND attname LIKE 'lock_order_%%%%'$$)",
            (f"{tenant.schema_name}.tasks",),
        ).fetchall()
    assert on_shards == [("1",)]


def test_a_step_that_would_upgrade_its_lock_never_deadlocks_with_a_reader_that_writes(
    tenants_at_base: Callable[[int], list], upgrade_location: str
) -> None:
    """Traffic has read `tasks` and then writes it, while the step (an index on tasks, then a
    column) runs. Taking SHARE for the index and then waiting for ACCESS EXCLUSIVE, the step
    would hold what the traffic's write waits for: a deadlock, and the step retried. Locked up
    front in ACCESS EXCLUSIVE, it holds nothing while it waits; PostgreSQL lets the write (whose
    transaction already holds the table) go first, and the step then runs once."""
    (tenant,) = tenants_at_base(1)
    outcome, waits, traffic_errors = migrate_against(
        tenant, upgrade_location, "tasks", "tasks", then=write
    )
    assert traffic_errors == []
    assert outcome.result == Result.MIGRATED, outcome.error
    assert (outcome.attempts, waits) == (1, [])
