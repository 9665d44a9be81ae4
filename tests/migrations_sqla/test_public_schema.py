"""`public` is the control plane's schema: no TaskFlow table is there after setup_platform, and
the tables an older setup left there are removed without touching what tenant schemas use."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext

from migrations_sqla import scripts
from migrations_sqla.migrator import owner_engine
from migrations_sqla.public_schema import (
    remove_taskflow_tables_from_public,
    taskflow_tables_in_public,
)
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.placement import SHARED_SCHEMA

TASKFLOW_TABLES = ("projects", "tasks", "comments", "tasks_history", "alembic_version")
SHARED_OBJECTS = (
    "SELECT to_regprocedure('public.taskflow_history()') IS NOT NULL,"
    " to_regprocedure('public.taskflow_history_v2()') IS NOT NULL,"
    " to_regclass('public.taskflow_id_seq') IS NOT NULL"
)


def public_tables(conn) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def trigger_count(conn, schema: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relnamespace = to_regnamespace(%s) AND NOT t.tgisinternal",
        (schema,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_public_holds_no_taskflow_tables_after_setup() -> None:
    with owner_connection() as conn:
        assert not public_tables(conn) & set(TASKFLOW_TABLES)
        assert taskflow_tables_in_public(conn) == []
        assert {"tenants_tenant", "django_migrations"} <= public_tables(conn)


def migrate_public_as_an_older_setup_did(connection: sa.Connection) -> None:
    """The TaskFlow revisions applied with `public` on the search_path, in the caller's
    transaction: what setup_platform did before the migrator refused `public`."""
    connection.exec_driver_sql("SELECT set_config('search_path', 'public', true)")
    script = scripts.script_directory()

    def steps(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs("head", rev)

    with EnvironmentContext(scripts.script_config(), script, fn=steps) as environment:
        environment.configure(
            connection=connection, version_table_schema="public", transactional_ddl=True
        )
        environment.run_migrations()


def test_the_cleanup_removes_the_tables_an_older_setup_left_and_keeps_shared_objects() -> None:
    """Everything happens in one transaction, rolled back at the end."""
    with owner_engine().connect() as connection, connection.begin() as transaction:
        conn = connection.connection.driver_connection
        assert isinstance(conn, psycopg.Connection)
        triggers = trigger_count(conn, TEMPLATE_SCHEMA)
        migrate_public_as_an_older_setup_did(connection)
        assert set(TASKFLOW_TABLES) <= public_tables(conn)

        removed = remove_taskflow_tables_from_public(conn)

        with_shared = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (SHARED_SCHEMA,)
        ).fetchall()
        assert sorted(removed) == sorted(row[0] for row in with_shared)
        assert not public_tables(conn) & set(TASKFLOW_TABLES)
        assert conn.execute(SHARED_OBJECTS).fetchone() == (True, True, True)
        assert trigger_count(conn, TEMPLATE_SCHEMA) == triggers
        assert remove_taskflow_tables_from_public(conn) == []
        transaction.rollback()
