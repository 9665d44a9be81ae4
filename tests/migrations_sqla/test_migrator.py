"""The per-schema migrator on a real PostgreSQL, without a worker: the optimistic round trip,
the careful path, non-transactional steps, lock timeouts retried with backoff, a migration that
must run online, compiled plans, and `public` refused."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from psycopg import IsolationLevel, errors, sql

from control_plane.management.commands.setup_platform import Command as SetupPlatform
from migrations_sqla import scripts
from migrations_sqla.migrator import (
    LOCK_NAMESPACE,
    Result,
    SchemaMigrator,
    Target,
    invalid_indexes_sql,
    migrate_schema,
    owner_engine,
)
from tenants.database_roles import owner_connection
from tenants.models import Tenant
from tests.migrations_sqla.support import (
    BASE_REVISION,
    TEST_REVISION,
    TEST_REVISION_2,
    effort_index,
    make_script_dir,
    schema_state,
)
from tests.round_trips import round_trips, statements_completed

pytestmark = pytest.mark.usefixtures("committed")


def target_for(tenant, location: str, revision: str = TEST_REVISION, **overrides: str) -> Target:
    return Target(
        alembic=revision, django=tenant.revisions["django"], location=location, **overrides
    )


def hold_schema_lock(holder, schema: str) -> None:
    holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, schema))


def test_recorded_revisions_migrate_a_schema_in_one_round_trip(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target_for(tenant, script_location))
        with round_trips(migrator.raw) as sent:
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.result == Result.MIGRATED, outcome.error
    assert (outcome.attempts, len(sent)) == (1, 1), sent
    assert outcome.before == tenant.revisions
    assert outcome.after == {"django": tenant.revisions["django"], "alembic": TEST_REVISION}
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (TEST_REVISION, True)


def test_the_optimistic_transaction_costs_four_statements_beside_the_plan(
    tenants_at_base, script_location
) -> None:
    """BEGIN, the settings with the schema's lock, the revision read under the lock, the guard,
    COMMIT: each statement is parsed, planned and run per schema, so their number is a figure."""
    (tenant,) = tenants_at_base(1)
    plan = scripts.plan(script_location, BASE_REVISION, TEST_REVISION)
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target_for(tenant, script_location))
        with statements_completed(migrator.raw) as tags:
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.result == Result.MIGRATED, outcome.error
    planned = len(scripts.split_statements(plan.sql))
    assert len(tags) == planned + 5, tags
    assert (tags[:3], tags[-2:]) == (["BEGIN", "SELECT 1", "SELECT 1"], ["SELECT 1", "COMMIT"])


def test_the_optimistic_guard_refuses_django_migrations_the_records_do_not_show(
    tenants_at_base, script_location
) -> None:
    """The records say the schema has the template's Django migrations; it has one more. The
    optimistic transaction must not commit (nor report the target): the careful path reads the
    schema and refuses it, and nothing is migrated."""
    (tenant,) = tenants_at_base(1)
    with owner_connection() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.django_migrations (app, name, applied)"
                " VALUES ('fanout_test', '0001_out_of_band', now())"
            ).format(sql.Identifier(tenant.schema_name))
        )
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target_for(tenant, script_location))
        outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.result == Result.FAILED, outcome
    assert outcome.after == {}
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (BASE_REVISION, False)


def test_records_that_are_wrong_fall_back_to_the_careful_path(
    tenants_at_base, script_location
) -> None:
    """The optimistic guard refuses (the schema is not where the records say); the careful
    path reads the schema under the lock and finds it already at the target."""
    (tenant,) = tenants_at_base(1)
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target_for(tenant, script_location))
        assert migrator.migrate(tenant.schema_name).result == Result.MIGRATED
        again = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert again.result == Result.SKIPPED, again.error
    assert again.before["alembic"] == TEST_REVISION
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (TEST_REVISION, True)


def test_the_careful_path_migrates_down_and_up(tenants_at_base, script_location) -> None:
    (tenant,) = tenants_at_base(1)
    with owner_engine().connect() as conn:
        up = SchemaMigrator(conn, target_for(tenant, script_location)).migrate(tenant.schema_name)
        down = SchemaMigrator(conn, target_for(tenant, script_location, BASE_REVISION)).migrate(
            tenant.schema_name
        )
    assert (up.result, up.before["alembic"], up.after["alembic"]) == (
        Result.MIGRATED, BASE_REVISION, TEST_REVISION,
    )  # fmt: skip
    assert (down.result, down.after["alembic"]) == (Result.MIGRATED, BASE_REVISION)
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (BASE_REVISION, False)


def test_non_transactional_steps_run_after_the_commit_and_a_retry_finishes_them(
    tenants_at_base, concurrent_script_location
) -> None:
    """Both paths build the CONCURRENTLY index after their commit; a retry of a schema already
    at the target (its earlier attempt stopped between commit and index) builds it again."""
    first, second = tenants_at_base(2)
    location = concurrent_script_location
    with owner_engine().connect() as conn:
        optimistic = SchemaMigrator(conn, target_for(first, location, TEST_REVISION_2)).migrate(
            first.schema_name, recorded=first.revisions
        )
        careful = SchemaMigrator(conn, target_for(second, location, TEST_REVISION_2)).migrate(
            second.schema_name
        )
        assert (optimistic.result, careful.result) == (Result.MIGRATED, Result.MIGRATED)
        assert effort_index(first.schema_name) is effort_index(second.schema_name) is True
        with owner_connection(autocommit=True) as owner:
            owner.execute(f'DROP INDEX "{first.schema_name}".tasks_effort')
        migrator = SchemaMigrator(conn, target_for(first, location, TEST_REVISION_2))
        assert migrator.migrate(first.schema_name).result == Result.SKIPPED
        assert effort_index(first.schema_name) is None  # a first attempt does not repair
        retried = migrator.migrate(first.schema_name, attempted_before=True)
        assert retried.result == Result.SKIPPED
        assert effort_index(first.schema_name) is True


def test_a_held_lock_is_retried_with_backoff_until_it_is_free(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    waits: list[float] = []
    with owner_connection() as holder:
        hold_schema_lock(holder, tenant.schema_name)

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                holder.rollback()  # the other run finishes

        with owner_engine().connect() as conn:
            migrator = SchemaMigrator(
                conn, target_for(tenant, script_location, lock_timeout="100ms"), sleep=sleep
            )
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.result == Result.MIGRATED, outcome.error
    assert outcome.attempts >= 3
    assert len(waits) >= 2
    assert all(0 <= w <= 5 for w in waits)
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (TEST_REVISION, True)


def test_lock_timeouts_give_up_after_the_limit_and_leave_the_schema_alone(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    with owner_connection() as holder:
        hold_schema_lock(holder, tenant.schema_name)
        with owner_engine().connect() as conn:
            migrator = SchemaMigrator(
                conn,
                target_for(tenant, script_location, lock_timeout="50ms"),
                sleep=lambda _s: None,
            )
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.result == Result.FAILED
    assert "lock timeout" in outcome.error
    assert "gave up after 5 attempts" in outcome.error
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (BASE_REVISION, False)


def test_setup_platform_upgrades_tenant_schemas_under_the_same_lock(tenants_at_base) -> None:
    """setup_platform's upgrade of a tenant schema waits for the per-schema lock a fan-out
    (here: a session) holds, and goes on once it is released."""
    (tenant,) = tenants_at_base(1)
    revisions = dict(tenant.revisions)
    Tenant.objects.filter(pk=tenant.pk).update(revisions={})  # behind, as setup_platform sees it
    done: list[int] = []
    with owner_connection() as holder:
        hold_schema_lock(holder, tenant.schema_name)

        def upgrade() -> None:
            try:
                with owner_engine().connect() as conn:
                    mine = Tenant.objects.filter(pk=tenant.pk)
                    done.append(SetupPlatform().upgrade_tenant_schemas(conn, revisions, mine))
            finally:
                connection.close()  # this thread's own Django connection

        thread = threading.Thread(target=upgrade)
        thread.start()
        deadline = time.monotonic() + 4
        waiting = False
        while not waiting and time.monotonic() < deadline:
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = %s AND objid = hashtext(%s)::oid",
                (LOCK_NAMESPACE, tenant.schema_name),
            ).fetchone()
            waiting = bool(row and row[0])
            time.sleep(0.02)
        updated = Tenant.objects.get(pk=tenant.pk).revisions
    thread.join(timeout=30)
    assert waiting, "setup_platform did not wait for the schema's lock"
    assert updated == {}  # nothing was recorded while the lock was held
    assert done == [1]
    assert Tenant.objects.get(pk=tenant.pk).revisions == revisions


def test_public_is_refused(script_location) -> None:
    with owner_engine().connect() as conn:
        target = Target(alembic=TEST_REVISION, django=None, location=script_location)
        outcome = SchemaMigrator(conn, target).migrate("public")
    assert outcome.result == Result.FAILED
    assert "public is the control plane's schema" in outcome.error
    assert migrate_schema("public").result == Result.FAILED


def test_a_migration_that_asks_for_it_runs_online_in_the_tenant_transaction(
    tenants_at_base, tmp_path: Path
) -> None:
    location = make_script_dir(tmp_path / "online")
    revision = Path(location) / "versions" / f"{TEST_REVISION}_estimate.py"
    revision.write_text(revision.read_text() + "\nfanout_offline = False\n")
    (tenant,) = tenants_at_base(1)
    plan = scripts.plan(location, BASE_REVISION, TEST_REVISION)
    assert plan.online
    with owner_engine().connect() as conn:
        outcome = SchemaMigrator(conn, target_for(tenant, location)).migrate(
            tenant.schema_name, recorded=tenant.revisions
        )
    assert outcome.result == Result.MIGRATED, outcome.error
    assert outcome.after == {"django": tenant.revisions["django"], "alembic": TEST_REVISION}
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (TEST_REVISION, True)
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("SELECT 1 FROM {}.alembic_version").format(sql.Identifier(tenant.schema_name))
        )


def test_compiled_plans_are_the_migration_sql_without_schema_names(script_location) -> None:
    up = scripts.plan(script_location, BASE_REVISION, TEST_REVISION)
    down = scripts.plan(script_location, TEST_REVISION, BASE_REVISION)
    assert not up.online
    assert "ALTER TABLE tasks ADD COLUMN estimate INTEGER" in up.sql
    assert f"UPDATE alembic_version SET version_num='{TEST_REVISION}'" in up.sql
    assert "DROP COLUMN estimate" in down.sql
    assert (
        scripts.plan(script_location, BASE_REVISION, TEST_REVISION) is up
    )  # compiled once per process
    assert scripts.resolve_revision(script_location, "head") == TEST_REVISION
    with pytest.raises(LookupError):
        scripts.resolve_revision(script_location, "9999")


def open_snapshot(holder) -> None:
    """A transaction elsewhere with a snapshot: CREATE INDEX CONCURRENTLY waits for it to end."""
    holder.isolation_level = IsolationLevel.REPEATABLE_READ
    holder.execute("SELECT 1")


@pytest.mark.parametrize("path", ["optimistic", "careful"])
def test_a_concurrent_index_that_waits_for_an_open_transaction_is_retried_until_built(
    tenants_at_base, concurrent_script_location, path: str
) -> None:
    (tenant,) = tenants_at_base(1)
    waits: list[float] = []
    with owner_connection() as holder:
        open_snapshot(holder)

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                holder.rollback()  # the open transaction ends

        target = target_for(
            tenant, concurrent_script_location, TEST_REVISION_2, lock_timeout="100ms"
        )
        with owner_engine().connect() as conn:
            outcome = SchemaMigrator(conn, target, sleep=sleep).migrate(
                tenant.schema_name, recorded=tenant.revisions if path == "optimistic" else None
            )
    assert outcome.result == Result.MIGRATED, outcome.error
    assert outcome.attempts >= 3
    assert outcome.error == ""
    assert effort_index(tenant.schema_name) is True


def test_an_index_left_invalid_is_rebuilt_by_the_next_attempt_never_skipped(
    tenants_at_base, concurrent_script_location
) -> None:
    """Retries spent: the schema fails with its index INVALID. A later run's first look at it
    (the template's on resume) drops and rebuilds the index and says migrated, not skipped."""
    (tenant,) = tenants_at_base(1)
    target = target_for(tenant, concurrent_script_location, TEST_REVISION_2, lock_timeout="50ms")
    with owner_connection() as holder:
        open_snapshot(holder)
        with owner_engine().connect() as conn:
            failed = SchemaMigrator(conn, target, sleep=lambda _s: None).migrate(tenant.schema_name)
        holder.rollback()
    assert failed.result == Result.FAILED
    assert "lock timeout" in failed.error
    assert "gave up after 5 attempts" in failed.error
    assert effort_index(tenant.schema_name) is False  # committed, its index INVALID

    with owner_engine().connect() as conn:
        again = SchemaMigrator(conn, target).migrate(tenant.schema_name)
        assert again.result == Result.MIGRATED, again.error
        assert effort_index(tenant.schema_name) is True
        assert SchemaMigrator(conn, target).migrate(tenant.schema_name).result == Result.SKIPPED


def test_a_plan_never_builds_an_index_that_a_later_revision_of_it_drops() -> None:
    """A plan runs every revision's transaction before the non-transactional steps: through the
    contract, 0008's due_date sort keys would be built on a column 0007c has dropped. An index
    built and dropped in the same plan is left out; what the plan ends with is built."""

    def built(source: str, target: str) -> set[str]:
        statements = scripts.plan("", source, target).non_transactional
        return {m.group(1) for s in statements if (m := scripts.CREATE_INDEX.match(s))}

    assert built("0006", "0007c") == {"tasks_due_at_sort_live", "tasks_priority_due_at_sort_live"}
    assert built("0007c", "0006") == set()  # downgrades rebuild in their transaction
    assert built("0007", "0008") == {
        "tasks_due_sort_live", "tasks_due_at_sort_live",
        "tasks_priority_due_sort_live", "tasks_priority_due_at_sort_live",
    }  # fmt: skip


def test_invalid_indexes_are_looked_up_by_their_declared_names_through_the_catalog_index() -> None:
    """The lookup names only the indexes the revisions build or drop CONCURRENTLY (up or down),
    and each is an index probe of pg_class by (relname, relnamespace): never a read of every
    relation in a catalog of thousands of schemas."""
    names = scripts.concurrent_index_names("")
    assert {"tasks_due_at_sort_live", "tasks_due_live", "tasks_priority_due_sort_live"} <= set(
        names
    )
    query = sql.SQL("EXPLAIN SELECT ") + invalid_indexes_sql("template", names)
    with owner_connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(query.as_string(conn)))
    assert "pg_class_relname_nsp_index" in plan, plan
    assert "Seq Scan on pg_class" not in plan, plan


def test_an_index_step_costs_its_statements_and_one_round_trip(
    tenants_at_base, concurrent_script_location
) -> None:
    """Optimistic path with one CREATE INDEX CONCURRENTLY: the transaction (which sets the
    step's timeouts for the session), the index, the invalid-index lookup with the reset."""
    (tenant,) = tenants_at_base(1)
    target = target_for(tenant, concurrent_script_location, TEST_REVISION_2)
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target)
        with round_trips(migrator.raw) as sent:
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
        settings = conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar()
    assert outcome.result == Result.MIGRATED, outcome.error
    assert len(sent) == 3, sent
    assert effort_index(tenant.schema_name) is True
    assert settings == "0"  # the session's own again


def index_names(schema: str) -> set[str]:
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'tasks'",
            (schema,),
        ).fetchall()
    return {row[0] for row in rows}


def test_the_contract_index_step_drops_only_the_indexes_that_are_there(tenants_at_base) -> None:
    """0007d drops four names CONCURRENTLY IF EXISTS: a schema has two of them (0008's sort
    keys), or the coalesce ones of a schema contracted before 0008 existed. The transaction
    reads, under the schema's lock, which are there: the step sends only their drops, and
    every one of them is gone after it (here three: a coalesce one made by hand too)."""
    (tenant,) = tenants_at_base(1)
    schema = tenant.schema_name
    assert tenant.revisions["alembic"] == "0008"
    with owner_connection() as conn:
        conn.execute(
            sql.SQL("CREATE INDEX tasks_due_live ON {}.tasks (tenant_id, due_date)").format(
                sql.Identifier(schema)
            )
        )
    dropped = {"tasks_due_sort_live", "tasks_priority_due_sort_live", "tasks_due_live"}
    assert dropped <= index_names(schema)
    target = Target(alembic="0007d", django=tenant.revisions["django"], location="")
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target)
        with round_trips(migrator.raw) as sent:
            outcome = migrator.migrate(schema, recorded=tenant.revisions)
        settings = conn.exec_driver_sql(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        ).one()
    assert outcome.result == Result.MIGRATED, outcome.error
    assert (outcome.attempts, outcome.after["alembic"]) == (1, "0007d")
    heads = [request.split(" IF EXISTS ")[-1] for request in sent[1:-1]]
    assert sorted(heads) == sorted(f'"{schema}".{name}"' for name in dropped), sent
    assert len(sent) == 5, sent  # the transaction, three drops, the lookup with the reset
    assert not (index_names(schema) & {*dropped, "tasks_priority_due_live"})
    assert tuple(settings) == ("0", "0")


def make_invalid_index(schema: str, name: str, column: str) -> None:
    """An index `name` left INVALID in `schema`, as an interrupted CREATE INDEX CONCURRENTLY
    leaves it: the build times out waiting for a transaction with an older snapshot."""
    with owner_connection() as holder:
        open_snapshot(holder)
        with owner_connection(autocommit=True) as conn:
            conn.execute("SELECT set_config('lock_timeout', '100ms', false)")
            try:
                with pytest.raises(errors.LockNotAvailable):
                    conn.execute(
                        sql.SQL("CREATE INDEX CONCURRENTLY {} ON {}.tasks ({})").format(
                            sql.Identifier(name), sql.Identifier(schema), sql.Identifier(column)
                        )
                    )
            finally:
                conn.execute("RESET lock_timeout")
        holder.rollback()


def test_an_invalid_index_that_if_not_exists_keeps_is_rebuilt_on_the_optimistic_path(
    tenants_at_base, concurrent_script_location
) -> None:
    """The optimistic path looks for invalid indexes only after its index step. An invalid
    `tasks_effort` is there before it (an interrupted build, here on another column): the
    step's CREATE INDEX CONCURRENTLY IF NOT EXISTS keeps it, the lookup after sees it, and the
    careful path drops and rebuilds it in the same call. Migrated, never failed, never with the
    index invalid or on the wrong column."""
    (tenant,) = tenants_at_base(1)
    schema = tenant.schema_name
    location = concurrent_script_location
    with owner_engine().connect() as conn:
        up = SchemaMigrator(conn, target_for(tenant, location)).migrate(schema)
    assert up.result == Result.MIGRATED, up.error
    make_invalid_index(schema, "tasks_effort", "title")
    assert effort_index(schema) is False
    recorded = {**tenant.revisions, "alembic": TEST_REVISION}
    waits: list[float] = []
    with owner_engine().connect() as conn:
        outcome = SchemaMigrator(
            conn, target_for(tenant, location, TEST_REVISION_2), sleep=waits.append
        ).migrate(schema, recorded=recorded)
        settings = conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar()
    assert outcome.result == Result.MIGRATED, outcome.error
    assert outcome.error == ""
    assert outcome.after["alembic"] == TEST_REVISION_2
    assert effort_index(schema) is True
    with owner_connection() as check:
        definition = check.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'tasks_effort'",
            (schema,),
        ).fetchone()
    assert definition is not None
    assert "(effort)" in definition[0], definition
    assert settings == "0"


def test_an_optimistic_index_step_refused_by_its_guard_leaves_no_timeouts_behind(
    tenants_at_base, concurrent_script_location
) -> None:
    """The optimistic transaction sets its index step's timeouts for the session; when its
    guard refuses (the records are wrong: the schema is already at the target) the ROLLBACK
    undoes them, and the careful path, with nothing to do, sends no reset of its own."""
    (tenant,) = tenants_at_base(1)
    target = target_for(tenant, concurrent_script_location, TEST_REVISION_2)
    with owner_engine().connect() as conn:
        migrator = SchemaMigrator(conn, target)
        assert migrator.migrate(tenant.schema_name).result == Result.MIGRATED
        recorded = {**tenant.revisions, "alembic": TEST_REVISION}
        again = migrator.migrate(tenant.schema_name, recorded=recorded)
        settings = conn.exec_driver_sql(
            "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
        ).one()
    assert again.result == Result.SKIPPED, again.error
    assert tuple(settings) == ("0", "0")
