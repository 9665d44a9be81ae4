"""The app role that serves requests has DML rights only: read from the catalog, not assumed."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from django.db import connection
from psycopg import IsolationLevel

from tenants.database_roles import app_role_name, owner_role_name

pytestmark = pytest.mark.django_db


def fetchone(query: str, *params: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def test_requests_connect_as_the_app_role() -> None:
    assert fetchone("SELECT current_user")[0] == app_role_name()
    assert app_role_name() != owner_role_name()


def test_app_role_is_neither_superuser_nor_bypasses_rls_nor_creates() -> None:
    superuser, bypass, createdb, createrole = fetchone(
        "SELECT rolsuper, rolbypassrls, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    assert (superuser, bypass, createdb, createrole) == (False, False, False, False)


def test_app_role_owns_no_table_and_cannot_create_in_public() -> None:
    owned = fetchone(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
        "WHERE r.rolname = current_user AND c.relkind IN ('r', 'p')"
    )[0]
    assert owned == 0
    assert fetchone("SELECT has_schema_privilege('public', 'CREATE')")[0] is False


def test_app_role_has_dml_but_not_ddl_rights_on_public_tables() -> None:
    table = "public.tenants_tenant"
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        assert fetchone("SELECT has_table_privilege(%s, %s)", table, privilege)[0] is True
    for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER"):
        assert fetchone("SELECT has_table_privilege(%s, %s)", table, privilege)[0] is False
    owner = fetchone(
        "SELECT tableowner FROM pg_tables WHERE schemaname='public' AND tablename='tenants_tenant'"
    )[0]
    assert owner == owner_role_name()


def connections_used(times: int) -> dict[object, int]:
    """The owner connections `times` uses were given, with how often each was."""
    from tenants.database_roles import owner_connection

    seen: dict[object, int] = {}
    for _ in range(times):
        with owner_connection() as conn:
            conn.execute("SELECT 1")
            seen[conn] = seen.get(conn, 0) + 1
    return seen


def test_an_owner_connection_is_closed_after_its_uses(settings) -> None:
    """A backend that has made many schemas keeps their catalog entries: it is not kept for good."""
    from tenants.database_roles import _uses

    settings.OWNER_POOL_RECYCLE_USES = 3
    # At most OWNER_POOL_SIZE (4) connections at a time, and none closed before its third use
    # in its whole life (earlier tests' uses count): one of them reached 3.
    seen = connections_used(9)
    assert max(_uses[conn] for conn in seen) >= 3  # type: ignore[index]
    # The pool takes a connection back in its own thread (it has a reset function): wait for it.
    deadline = time.monotonic() + 10
    while not all(conn.closed for conn in seen if _uses[conn] >= 3):  # type: ignore[attr-defined,index]
        assert time.monotonic() < deadline, "a connection past its uses was kept"
        time.sleep(0.01)
    # Uses in earlier tests count too: a connection's whole life is what is bounded.
    assert all(conn.closed == (_uses[conn] >= 3) for conn in seen)  # type: ignore[attr-defined,index]


def test_owner_connections_are_kept_when_recycling_is_off(settings) -> None:
    settings.OWNER_POOL_RECYCLE_USES = 0
    seen = connections_used(9)
    assert not any(conn.closed for conn in seen)  # type: ignore[attr-defined]


def test_an_owner_connection_comes_back_from_the_pool_without_its_last_users_isolation(
    settings,
) -> None:
    """psycopg keeps the isolation level (read-only, deferrable) on the connection: one user's
    REPEATABLE READ reached the next, and a spare refill waiting for its lock counted from a
    snapshot older than the last refill's commit (tests/tenants/test_spares.py)."""
    from tenants.database_roles import owner_connection

    settings.OWNER_POOL_RECYCLE_USES = 0  # the same connection comes back, not a new one
    with owner_connection() as used:
        used.isolation_level = IsolationLevel.REPEATABLE_READ
        used.read_only = True
        used.deferrable = True
        used.execute("SELECT 1")
    # Holding every connection the pool may have, this one is among them (reset, or closed).
    with ExitStack() as stack:
        for _ in range(settings.OWNER_POOL_SIZE):
            conn = stack.enter_context(owner_connection())
            if conn is used:
                break
        else:
            pytest.fail("the connection did not come back to the pool")
        characteristics = conn.execute(
            "SELECT current_setting('transaction_isolation'),"
            " current_setting('transaction_read_only')"
        ).fetchone()
        conn.rollback()
    assert (conn.isolation_level, conn.read_only, conn.deferrable) == (None, None, None)
    assert characteristics == ("read committed", "off")
