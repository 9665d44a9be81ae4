"""The owner (migration) engine sends no server-side prepared statements: its connections run
DDL, and a plan psycopg prepared before a table changed breaks once it has ("cached plan must
not change result type"), which made the migration round-trip tests flaky."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from psycopg import sql

from migrations_sqla.migrator import owner_engine
from tenants.database_roles import owner_connection

# psycopg prepares a statement from its prepare_threshold-th execution on (5 by default).
PAST_PREPARE_THRESHOLD = 12


@pytest.fixture
def probe_table(unique: str) -> Iterator[str]:
    """A schema of the test's own holding one table with one row; dropped afterwards."""
    schema = f"prep_{unique}"
    with owner_connection(autocommit=True) as ddl:
        ddl.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        ddl.execute(
            sql.SQL("CREATE TABLE {}.probe (id int PRIMARY KEY)").format(sql.Identifier(schema))
        )
        ddl.execute(sql.SQL("INSERT INTO {}.probe VALUES (1)").format(sql.Identifier(schema)))
    yield schema
    with owner_connection(autocommit=True) as ddl:
        ddl.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_a_statement_run_often_still_runs_after_its_table_changed(probe_table: str) -> None:
    statement = sa.text(f'SELECT * FROM "{probe_table}".probe WHERE id = :id')
    with owner_engine().connect() as conn:
        for _ in range(PAST_PREPARE_THRESHOLD):
            assert conn.execute(statement, {"id": 1}).all() == [(1,)]
        conn.commit()
        with owner_connection(autocommit=True) as ddl:
            ddl.execute(
                sql.SQL("ALTER TABLE {}.probe ADD COLUMN note text DEFAULT 'added'").format(
                    sql.Identifier(probe_table)
                )
            )
        assert conn.execute(statement, {"id": 1}).all() == [(1, "added")]
        conn.commit()


def test_owner_engine_connections_prepare_nothing() -> None:
    with owner_engine().connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        assert raw.prepare_threshold is None
