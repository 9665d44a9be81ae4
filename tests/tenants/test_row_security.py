"""Forced row-level security: off only for a node move's copy, restored after a crash."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from psycopg import sql

from tenants.database_roles import owner_connection
from tenants.models import Isolation
from tenants.row_security import (
    MOVE_LOCK_SPACE,
    restore_forced_row_security,
    unforced_for_copy,
    unforced_tables,
)
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant


@pytest.fixture
def schema_tenant(committed) -> Iterator[TenantFixture]:
    fixture = provisioned_tenant(Isolation.SCHEMA)
    yield fixture
    discard(fixture)


def row_secure(schema: str) -> dict[str, bool]:
    """Each table of `schema` with row-level security -> whether it forces it on its owner."""
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT relname, relforcerowsecurity FROM pg_class WHERE relnamespace ="
            " %s::regnamespace AND relkind = 'r' AND relrowsecurity",
            (schema,),
        ).fetchall()
    return {str(name): bool(forced) for name, forced in rows}


def leave_unforced(schema: str) -> None:
    """What a node move killed between its two switches leaves behind."""
    with owner_connection() as conn:
        for table in row_secure(schema):
            conn.execute(
                sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(
                    sql.Identifier(schema, table)
                )
            )


def test_tables_left_unforced_are_listed_and_forced_again(
    schema_tenant: TenantFixture, capsys
) -> None:
    schema = schema_tenant.tenant.schema_name
    tables = row_secure(schema)
    assert {"tasks", "tasks_history", "comments", "projects"} <= set(tables)
    assert all(tables.values())
    leave_unforced(schema)
    assert not any(row_secure(schema).values())
    call_command("placement_check", schema)
    assert f"{schema}.tasks\tno_force\ttasks" in capsys.readouterr().out
    with owner_connection(autocommit=True) as conn:
        assert unforced_tables(conn)[schema] == sorted(tables)
        done = restore_forced_row_security(conn)
        again = restore_forced_row_security(conn)
        left = unforced_tables(conn)
    assert done.restored[schema] == sorted(tables)
    assert schema not in again.restored
    assert schema not in left
    assert all(row_secure(schema).values())


def test_a_schema_whose_move_lock_is_held_is_left_to_that_move(
    schema_tenant: TenantFixture,
) -> None:
    """A live move holds the schema's move lock while forcing is off: the repair waits for
    nothing and leaves that schema alone, then forces it once the lock is free."""
    schema = schema_tenant.tenant.schema_name
    leave_unforced(schema)
    with owner_connection(autocommit=True) as live, owner_connection(autocommit=True) as conn:
        live.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (MOVE_LOCK_SPACE, schema))
        busy = restore_forced_row_security(conn)
        assert schema in busy.busy
        assert schema not in busy.restored
        assert not any(row_secure(schema).values())
        live.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (MOVE_LOCK_SPACE, schema))
        done = restore_forced_row_security(conn)
    assert schema in done.restored
    assert all(row_secure(schema).values())


def test_forcing_comes_back_after_the_copy_whatever_happens(schema_tenant: TenantFixture) -> None:
    """Inside `unforced_for_copy` the owner's view is unfiltered and the move lock is held;
    after it, even when the block raises, every table forces again and the lock is free."""
    schema = schema_tenant.tenant.schema_name
    seen: list[bool] = []

    def failing_copy(conn, other) -> None:
        with unforced_for_copy(conn, schema):
            seen.append(any(row_secure(schema).values()))
            seen.append(schema in restore_forced_row_security(other).busy)
            raise RuntimeError("copy failed")

    with owner_connection(autocommit=True) as conn, owner_connection(autocommit=True) as other:
        with pytest.raises(RuntimeError, match="copy failed"):
            failing_copy(conn, other)
        free = other.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (MOVE_LOCK_SPACE, schema)
        ).fetchone()
    assert seen == [False, True]
    assert all(row_secure(schema).values())
    assert free is not None
    assert free[0]
