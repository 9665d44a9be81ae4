"""One schema's migration on a real PostgreSQL, without a worker: lock timeouts retry with
backoff, a migration that must run online does, and the scripts compile once."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

from control_plane.fanout import scripts
from control_plane.fanout.tenant_migration import LOCK_NAMESPACE, SchemaMigrator, Target
from migrations_sqla.runner import owner_engine
from tenants.database_roles import owner_connection
from tests.fanout.support import BASE_REVISION, TEST_REVISION, make_script_dir, schema_state

pytestmark = pytest.mark.usefixtures("committed")


def target_for(tenant, location: str, **overrides: str) -> Target:
    return Target(
        alembic=TEST_REVISION, django=tenant.revisions["django"], location=location, **overrides
    )


def test_a_held_lock_is_retried_with_backoff_until_it_is_free(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    waits: list[float] = []
    with owner_connection() as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, tenant.schema_name)
        )

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                holder.rollback()  # the other run finishes

        with owner_engine().connect() as conn:
            migrator = SchemaMigrator(
                conn, target_for(tenant, script_location, lock_timeout="100ms"), sleep=sleep
            )
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.attempts >= 3
    assert len(waits) >= 2
    assert all(0 <= w <= 5 for w in waits)
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (TEST_REVISION, True)


def test_lock_timeouts_give_up_after_the_limit_and_leave_the_schema_alone(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    with owner_connection() as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, tenant.schema_name)
        )
        with owner_engine().connect() as conn:
            migrator = SchemaMigrator(
                conn,
                target_for(tenant, script_location, lock_timeout="50ms"),
                sleep=lambda _s: None,
            )
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
    assert outcome.status == "failed"
    assert "lock timeout" in outcome.error
    assert "gave up after 5 attempts" in outcome.error
    assert schema_state([tenant.schema_name])[tenant.schema_name] == (BASE_REVISION, False)


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
    assert outcome.status == "succeeded", outcome.error
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
