"""Runs through what review found: a CREATE INDEX CONCURRENTLY step blocked by an open
transaction, and a run whose only change is a Django tenant-app migration. Real PostgreSQL,
Redis and a Celery worker process."""

from __future__ import annotations

import pytest
from django.db.migrations.loader import MigrationLoader
from psycopg import IsolationLevel, sql

from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus, StepStatus
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.models import Tenant
from tests.fanout.support import wait_for_run
from tests.migrations_sqla.support import BASE_REVISION, effort_index, set_template

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("fanout_worker", "committed")]

CONTENTTYPES_0002 = ("contenttypes", "0002_remove_content_type_name")


def test_a_template_index_left_invalid_fails_the_run_and_resume_rebuilds_it(
    tenants_at_base, concurrent_script_location
) -> None:
    tenants = tenants_at_base(4)
    schemas = [t.schema_name for t in tenants]
    try:
        with owner_connection() as holder:  # an open transaction CONCURRENTLY waits for
            holder.isolation_level = IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT 1")
            run = wait_for_run(
                runs.start_run(
                    tenants=[t.slug for t in tenants],
                    script_location=concurrent_script_location,
                    lock_timeout="100ms",
                ).pk
            )
        assert run.status == RunStatus.FAILED  # not success with the template's index INVALID
        template = run.steps.get(schema_name=TEMPLATE_SCHEMA)
        assert template.status == StepStatus.FAILED
        assert template.attempts == 5, template.error  # retried with backoff before giving up
        assert "lock timeout" in template.error
        assert effort_index(TEMPLATE_SCHEMA) is False

        resumed = wait_for_run(runs.resume_run(run).pk)
        assert resumed.status == RunStatus.SUCCEEDED, resumed.error
        template.refresh_from_db()
        assert template.status == StepStatus.SUCCEEDED  # rebuilt, not "skipped"
        assert effort_index(TEMPLATE_SCHEMA) is True
        assert all(effort_index(s) is True for s in schemas)
    finally:
        set_template(concurrent_script_location, BASE_REVISION)


def lack_contenttypes_0002(schema: str) -> None:
    """Make `schema` look as if contenttypes' second migration (a tenant app's) were new code:
    its row and those of the migrations that depend on it (shared apps' bookkeeping) go."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    later, todo = set(), [CONTENTTYPES_0002]
    while todo:
        key = todo.pop()
        if key not in later:
            later.add(key)
            todo.extend(child.key for child in graph.node_map[key].children)
    ident = sql.Identifier(schema)
    with owner_connection() as conn:
        for app, name in sorted(later):
            conn.execute(
                sql.SQL("DELETE FROM {}.django_migrations WHERE app = %s AND name = %s").format(
                    ident
                ),
                (app, name),
            )
        conn.execute(
            sql.SQL("ALTER TABLE {}.django_content_type ADD COLUMN name varchar(100)").format(ident)
        )


def has_legacy_name_column(schema: str) -> bool:
    with owner_connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'django_content_type' AND column_name = 'name'",
            (schema,),
        ).fetchone()
    return bool(row and row[0])


def test_a_run_whose_only_change_is_a_tenant_app_migration_records_them_migrated(
    tenants_at_base, script_location
) -> None:
    lack_contenttypes_0002(TEMPLATE_SCHEMA)
    tenants = tenants_at_base(3)  # clones: they lack it too
    schemas = [t.schema_name for t in tenants]
    assert all(has_legacy_name_column(s) for s in [TEMPLATE_SCHEMA, *schemas])

    run = wait_for_run(
        runs.start_run(
            tenants=[t.slug for t in tenants], to=BASE_REVISION, script_location=script_location
        ).pk
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    statuses = dict(run.steps.values_list("schema_name", "status"))
    assert statuses[TEMPLATE_SCHEMA] == StepStatus.SUCCEEDED
    assert {statuses[s] for s in schemas} == {StepStatus.SUCCEEDED}
    assert not any(has_legacy_name_column(s) for s in [TEMPLATE_SCHEMA, *schemas])
    for step in run.steps.filter(tenant__isnull=False):
        assert step.revisions_before["django"] != step.revisions_after["django"]
        assert step.revisions_after == run.target
    assert {t.revisions["django"] for t in Tenant.objects.filter(schema_name__in=schemas)} == {
        run.target["django"]
    }
