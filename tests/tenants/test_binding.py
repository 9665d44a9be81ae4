"""Bound sessions: pooled connections the server has dropped are replaced without a ping, and
every transaction carries the tenant's identity (real PostgreSQL)."""

from __future__ import annotations

import re
import time
from datetime import UTC

import psycopg
import pytest
import sqlalchemy as sa
from django.conf import settings
from django.test import RequestFactory
from sqlalchemy.orm import Session

from tenants.binding import (
    SESSION_OPTIONS,
    TenantBinding,
    connect_args,
    engine,
    request_id_of,
    tenant_of,
    tenant_reads,
    tenant_session,
)
from tenants.citus import forget as forget_citus
from tenants.driver_reads import read_rows
from tests.round_trips import round_trips, statement_heads, wire_exchanges, wire_messages
from tests.superuser import superuser_connection

BINDING = TenantBinding(tenant_id=42, schema="public", actor_id=7, request_id="req-1")


def binding_seen(connection: sa.Connection | Session) -> tuple[str, str, str]:
    """The tenant, actor and request id the transaction on `connection` is bound to."""
    row = connection.execute(
        sa.text(
            "SELECT current_setting('app.tenant_id'), current_setting('app.actor_id'),"
            " current_setting('app.request_id')"
        )
    ).one()
    return (row[0], row[1], row[2])


# The binding as a driver read sees it (tenants.driver_reads).
SEEN = sa.select(
    sa.func.current_setting("app.tenant_id").label("tenant_id"),
    sa.func.current_setting("app.actor_id").label("actor_id"),
    sa.func.current_setting("app.request_id").label("request_id"),
)


def backend_pid() -> int:
    with tenant_session(BINDING) as session:
        return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    """What a server restart does to a pooled connection: the backend goes away (superuser)."""
    with superuser_connection() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.02)


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout() -> None:
    engine().dispose()  # one pooled connection: the next checkout must get the terminated one
    dropped = backend_pid()
    pool = engine().pool
    assert isinstance(pool, sa.QueuePool)
    assert pool.checkedin() == 1
    terminate(dropped)
    replaced = backend_pid()  # no error reaches the caller
    assert replaced != dropped
    assert backend_pid() == replaced


def pid_serving(schema: str) -> int:
    with tenant_session(TenantBinding(tenant_id=42, schema=schema)) as session:
        return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_that_served_many_schemas_is_replaced_at_checkout(settings) -> None:
    """Its backend's catalog caches hold every relation it touched; a new one starts empty."""
    settings.TASKFLOW_POOL_RECYCLE_SCHEMAS = 3
    engine().dispose()  # one pooled connection, reused by every session below
    first = pid_serving("t_one")
    assert [pid_serving("t_one"), pid_serving("t_two"), pid_serving("t_two")] == [first] * 3
    assert pid_serving("t_three") == first  # the third schema is served, then it is done
    replaced = pid_serving("t_one")
    assert replaced != first
    assert pid_serving("t_two") == replaced  # the count starts again on the new connection


def test_recycling_by_schemas_can_be_turned_off(settings) -> None:
    settings.TASKFLOW_POOL_RECYCLE_SCHEMAS = 0
    engine().dispose()
    first = pid_serving("t_one")
    assert {pid_serving(f"t_{n}") for n in range(200)} == {first}


def test_a_warm_read_is_begin_binding_query_commit_and_no_ping() -> None:
    engine().dispose()
    with tenant_session(BINDING) as session:  # the one pooled connection, traced by libpq
        driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with round_trips(driver) as sent:
        backend_pid()
    assert statement_heads(sent) == [
        "BEGIN",
        "SELECT set_config",
        "SELECT pg_backend_pid",
        "COMMIT",
    ], sent


def test_a_read_is_one_query_message_with_nothing_after_it() -> None:
    """Behind PgBouncer in transaction mode the server goes back to the pool when a read's
    implicit transaction ends; a message the client sends after that (psycopg's pipeline sent
    a Flush after its Sync when the answers were late) takes a server connection that the
    server never answers, held until the client's next query while every other client waits.
    A read is one simple Query, the binding and the statement, and nothing else."""
    engine().dispose()
    with tenant_reads(BINDING) as connection:  # the one pooled connection, traced by libpq
        driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    for _ in range(5):  # psycopg's Flush came only when the answers were late: more than once
        with wire_messages(driver) as messages, tenant_reads(BINDING) as connection:
            [row] = read_rows(connection, SEEN, {})
        assert tuple(row) == ("42", "7", "req-1")
        assert [message for direction, message, _ in messages if direction == "F"] == ["Query"]
        assert messages[-1][:2] == ("B", "ReadyForQuery")


def test_a_read_without_a_session_sends_the_binding_with_its_query() -> None:
    """tenant_reads: a driver read is the binding and the statement in one Query message, one round
    trip, one implicit transaction; a statement through SQLAlchemy runs in a transaction begun
    with the binding (one round trip), committed at the end."""
    engine().dispose()
    with tenant_reads(BINDING) as connection:  # the one pooled connection, traced by libpq
        driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with wire_exchanges(driver) as exchanges, tenant_reads(BINDING) as connection:
        [row] = read_rows(connection, SEEN, {})
    assert tuple(row) == ("42", "7", "req-1")
    assert [statement_heads(sent) for sent in exchanges] == [
        ["SELECT set_config", "SELECT current_setting"]
    ], exchanges
    assert driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert driver.autocommit is False  # tenant_session's transactions are the driver's again
    with wire_exchanges(driver) as exchanges, tenant_reads(BINDING) as connection:
        settings_seen = binding_seen(connection)
        [row] = read_rows(connection, SEEN, {})  # inside the transaction SQLAlchemy's began
    assert settings_seen == tuple(row) == ("42", "7", "req-1")
    assert [statement_heads(sent) for sent in exchanges] == [
        ["BEGIN", "SELECT set_config"],
        ["SELECT current_setting"],
        ["SELECT set_config", "SELECT current_setting"],
        ["COMMIT"],
    ], exchanges
    with tenant_reads(BINDING) as connection:  # the binding ended with the transaction
        left = connection.execute(sa.text("SELECT current_setting('app.tenant_id', true)"))
        assert left.scalar_one() == "42"
    with engine().connect() as plain:
        assert plain.execute(sa.text("SELECT current_setting('app.tenant_id', true)")).scalar() in (
            None,
            "",
        )


NOW = sa.select(sa.func.now().label("now"))


def test_every_connection_runs_in_utc_and_reads_times_as_utc_datetimes() -> None:
    """Times come back in the standard library's UTC, whatever name the server's own default
    gives that zone: not a ZoneInfo, which costs a conversion per value loaded and a call into
    Python per value orjson writes (connect_args)."""
    engine().dispose()
    with tenant_reads(BINDING) as connection:
        [row] = read_rows(connection, NOW, {})  # the driver's path
        through_sqlalchemy = connection.execute(NOW).scalar_one()
        zone: str = connection.execute(sa.text("SHOW TimeZone")).scalar_one()
    assert zone == "UTC"
    assert row.now.tzinfo is UTC
    assert through_sqlalchemy.tzinfo is UTC
    with tenant_session(BINDING) as session:
        assert session.execute(NOW).scalar_one().tzinfo is UTC


def test_options_a_database_url_names_are_kept_beside_the_time_zone(settings) -> None:
    settings.DATABASE_BEHIND_PGBOUNCER = False
    plain = "postgresql+psycopg://app@db/taskflow"
    assert connect_args(plain) == {"options": SESSION_OPTIONS}
    given = connect_args(plain + "?options=-c%20statement_timeout%3D5s")
    assert given == {"options": f"-c statement_timeout=5s {SESSION_OPTIONS}"}
    settings.DATABASE_BEHIND_PGBOUNCER = True
    assert connect_args(plain) == {"options": SESSION_OPTIONS, "prepare_threshold": None}


def test_every_transaction_carries_the_binding() -> None:
    with tenant_session(BINDING) as session:
        first = binding_seen(session)
        session.commit()
        second: str = session.execute(
            sa.text("SELECT current_setting('app.tenant_id')")
        ).scalar_one()
    assert first == ("42", "7", "req-1")
    assert second == "42"


def test_the_write_lock_gives_up_after_its_timeout_and_resets_it() -> None:
    from tenants.binding import WRITE_LOCK_SPACE, TenantBusy, hold_write_lock

    owner = settings.DATABASES["default"]
    url = f"host={owner['HOST']} port={owner['PORT']} dbname={owner['NAME']} user=postgres"
    with psycopg.connect(url) as mover:
        mover.execute("SELECT pg_advisory_xact_lock(%s, %s)", [WRITE_LOCK_SPACE, 42])
        started = time.monotonic()
        with pytest.raises(TenantBusy), tenant_session(BINDING) as session:
            hold_write_lock(session)
        waited = time.monotonic() - started
        mover.rollback()
    assert settings.TENANT_WRITE_LOCK_TIMEOUT_MS / 1000 <= waited < 30
    with tenant_session(BINDING) as session:
        hold_write_lock(session)
        timeout: str = session.execute(
            sa.text("SELECT current_setting('lock_timeout')")
        ).scalar_one()
    assert timeout == "0"


@pytest.mark.parametrize("supplied", ["req-123", "a.b_C-9", "x" * 64])
def test_a_well_formed_request_id_is_kept(supplied: str) -> None:
    request = RequestFactory().get("/", headers={"X-Request-ID": supplied})
    assert request_id_of(request) == supplied


@pytest.mark.parametrize("supplied", ["", "has space", "x" * 65, "semi;colon", "é"])
def test_any_other_request_id_is_replaced_by_a_new_one(supplied: str) -> None:
    request = RequestFactory().get("/", headers={"X-Request-ID": supplied})
    assert re.fullmatch(r"[0-9a-f]{32}", request_id_of(request))


def test_a_request_not_resolved_to_a_tenant_has_no_tenant() -> None:
    with pytest.raises(TypeError):
        tenant_of(RequestFactory().get("/"))


def test_on_a_citus_coordinator_the_binding_is_three_set_locals(monkeypatch) -> None:
    """Citus passes SET commands on to its workers, not set_config calls: there the binding is
    SET LOCAL (the engine check is what changes; the statements run on this server)."""
    import tenants.binding

    monkeypatch.setattr(tenants.binding, "is_citus", lambda _conn: True)
    engine().dispose()
    with tenant_session(BINDING) as session:
        seen = binding_seen(session)
    assert seen == ("42", "7", "req-1")
    with tenant_session(
        TenantBinding(tenant_id=42, schema="public", actor_id=None, request_id="it's; odd")
    ) as session:
        odd = session.execute(
            sa.text("SELECT current_setting('app.actor_id'), current_setting('app.request_id')")
        ).one()
    assert tuple(odd) == ("", "it's; odd")


def test_a_read_on_a_connection_whose_first_use_opened_a_transaction_is_bound_and_ends_it() -> None:
    """The first use of a connection asks whether the server is a Citus coordinator, which
    opens a transaction; the reads go in it, bound, and it is committed at the end."""
    forget_citus()
    engine().dispose()
    with tenant_reads(BINDING) as connection:
        [row] = read_rows(connection, SEEN, {})
        driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    assert tuple(row) == ("42", "7", "req-1")
    assert driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert driver.autocommit is False
    # the next checkout: one round trip again
    with tenant_reads(BINDING) as connection, wire_exchanges(driver) as exchanges:
        [row] = read_rows(connection, SEEN, {})
    assert tuple(row) == ("42", "7", "req-1")
    assert len(exchanges) == 1, exchanges


def test_a_read_the_server_refuses_leaves_the_connection_unbound_and_usable() -> None:
    """An error in a read's Query ends its implicit transaction (the server rolls it back);
    the pooled connection serves the next tenant's reads, bound to that tenant."""
    engine().dispose()
    failing = sa.select((sa.literal_column("1") / sa.literal_column("0")).label("never"))
    with pytest.raises(psycopg.errors.DivisionByZero), tenant_reads(BINDING) as connection:
        read_rows(connection, failing, {})
    other = TenantBinding(tenant_id=43, schema="public", actor_id=8, request_id="req-2")
    with tenant_reads(other) as connection:
        [row] = read_rows(connection, SEEN, {})
        driver = connection.connection.driver_connection
    assert tuple(row) == ("43", "8", "req-2")
    assert isinstance(driver, psycopg.Connection)
    assert driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert driver.autocommit is False


def test_whether_a_database_is_citus_is_asked_once_and_again_after_forget() -> None:
    """is_citus: one query per database (and per forget()), and the connection's host, port and
    database (three calls into libpq) read once per connection."""
    from tenants import citus

    with tenant_reads(BINDING) as connection:
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        forget_citus()
        with round_trips(driver) as asked:
            assert citus.is_citus(driver) is False
            assert citus.is_citus(driver) is False
        info = driver.info
        assert citus._keys[driver] == f"{info.host}:{info.port}/{info.dbname}"
        forget_citus()
        with round_trips(driver) as asked_again:
            citus.is_citus(driver)
    assert statement_heads(asked) == ["SELECT count"], asked
    assert statement_heads(asked_again) == ["SELECT count"], asked_again
