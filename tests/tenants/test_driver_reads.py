"""Read statements sent straight to the driver: the same rows as SQLAlchemy reads, compiled once
per statement and schema, and SQLAlchemy's own path for what needs it (real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tenants.binding import TenantBinding, engine, tenant_reads
from tenants.driver_reads import driver_statement, read_rows, rendered
from tenants.placement import PLACEHOLDER_SCHEMA
from tests.tenants.test_binding import terminate

# A catalog table under the placeholder schema: the translate map names pg_catalog for it.
NAMESPACES = sa.Table(
    "pg_namespace",
    sa.MetaData(),
    sa.Column("oid", sa.BigInteger),
    sa.Column("nspname", sa.String),
    schema=PLACEHOLDER_SCHEMA,
)
CATALOG = TenantBinding(tenant_id=42, schema="pg_catalog", actor_id=7, request_id="req-1")


def by_name() -> sa.Select[Any]:
    """A new statement object each call (the compiled cache is keyed by the object)."""
    return (
        sa.select(NAMESPACES.c.nspname, NAMESPACES.c.oid, sa.literal("fixed").label("tag"))
        .where(NAMESPACES.c.nspname == sa.bindparam("name"))
        .order_by(NAMESPACES.c.nspname)
    )


def test_rows_are_what_sqlalchemy_reads_with_names_as_attributes() -> None:
    statement = by_name()
    with tenant_reads(CATALOG) as connection:
        expected = connection.execute(statement, {"name": "pg_catalog"}).all()
        rows = read_rows(connection, statement, {"name": "pg_catalog"})
    assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
    assert len(rows) == 1
    assert (rows[0].nspname, rows[0].tag) == ("pg_catalog", "fixed")
    assert rows[0]._fields == ("nspname", "oid", "tag")  # a namedtuple, as psycopg makes them


def test_a_statement_is_compiled_once_whatever_the_schema_and_rendered_per_schema() -> None:
    statement = by_name()
    before = driver_statement.cache_info()
    for _ in range(2):
        with tenant_reads(CATALOG) as connection:
            assert read_rows(connection, statement, {"name": "public"})[0].nspname == "public"
    other = TenantBinding(tenant_id=42, schema="information_schema")
    with (
        pytest.raises(psycopg.errors.UndefinedTable, match=r"information_schema\.pg_namespace"),
        tenant_reads(other) as connection,
    ):
        read_rows(connection, statement, {"name": "public"})  # sent, in the other schema
    assert driver_statement.cache_info().misses == before.misses + 1  # one compile, 3 reads
    compiled = driver_statement(statement, (PLACEHOLDER_SCHEMA,), engine().dialect)
    assert compiled is not None
    assert "pg_namespace" in compiled.sql
    assert dict(compiled.fixed) == {"param_1": "fixed"}
    for schema in ("pg_catalog", "information_schema"):
        sql = rendered(compiled, ((PLACEHOLDER_SCHEMA, schema),))
        assert f"FROM {schema}.pg_namespace" in sql
        assert PLACEHOLDER_SCHEMA not in sql.replace("pg_namespace", "")


def test_rows_of_built_in_types_come_in_binary_and_read_as_sqlalchemy_reads_them() -> None:
    """Binary rows (a timestamptz is eight bytes, not text to parse): the same values as the
    text rows SQLAlchemy reads, for each type that takes the binary format."""
    at = sa.cast(sa.literal_column("'2026-12-08 01:02:03.456789+00'"), sa.DateTime(timezone=True))
    statement = sa.select(
        NAMESPACES.c.oid,
        NAMESPACES.c.nspname,
        sa.cast(sa.literal_column("7"), sa.SmallInteger).label("small"),
        at.label("at"),
        sa.cast(at, sa.Date).label("day"),
        (NAMESPACES.c.oid > 0).label("positive"),
        sa.cast(sa.literal_column("'text'"), sa.Text).label("long"),
    ).where(NAMESPACES.c.nspname == sa.bindparam("name"))
    compiled = driver_statement(statement, (PLACEHOLDER_SCHEMA,), engine().dialect)
    assert compiled is not None
    assert compiled.binary
    with tenant_reads(CATALOG) as connection:
        expected = connection.execute(statement, {"name": "public"}).all()
        rows = read_rows(connection, statement, {"name": "public"})
    assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
    assert [type(v) for v in rows[0]] == [type(v) for v in expected[0]]


@pytest.mark.parametrize(
    "column",
    [
        sa.cast(sa.literal_column("'a'"), sa.Enum("a", name="letter", native_enum=False)).label(
            "letter"
        ),
        sa.func.current_setting("app.tenant_id").label("untyped"),
    ],
    ids=["enum", "untyped"],
)
def test_a_column_psycopg_may_not_know_in_binary_is_read_as_text(column: Any) -> None:
    """An enum or an expression of no known type is text on the wire (psycopg reads an unknown
    type's binary form as bytes, its text as a string), or not read here at all."""
    statement = sa.select(NAMESPACES.c.nspname, column)
    compiled = driver_statement(statement, (PLACEHOLDER_SCHEMA,), engine().dialect)
    assert compiled is None or not compiled.binary
    with tenant_reads(CATALOG) as connection:
        [row] = read_rows(connection, statement.where(NAMESPACES.c.nspname == "public"), {})
    assert isinstance(row[1], str)


def test_an_expanding_parameter_goes_through_sqlalchemy() -> None:
    statement = sa.select(NAMESPACES.c.nspname).where(
        NAMESPACES.c.nspname.in_(sa.bindparam("names", expanding=True))
    )
    assert driver_statement(statement, (PLACEHOLDER_SCHEMA,), engine().dialect) is None
    with tenant_reads(CATALOG) as connection:
        rows = read_rows(connection, statement, {"names": ["public", "pg_catalog"]})
    assert sorted(r.nspname for r in rows) == ["pg_catalog", "public"]


def test_a_statement_listener_sees_every_read() -> None:
    """Tests and the benchmark capture the SQL a page sends with before_cursor_execute."""
    seen: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine(), "before_cursor_execute", capture)
    try:
        with tenant_reads(CATALOG) as connection:
            rows = read_rows(connection, by_name(), {"name": "public"})
    finally:
        sa.event.remove(engine(), "before_cursor_execute", capture)
    assert [r.nspname for r in rows] == ["public"]
    assert [s for s in seen if "pg_namespace" in s], seen


@pytest.mark.parametrize("where", ["connection", "engine class"])
def test_a_listener_on_one_connection_or_on_every_engine_sees_the_read(where: str) -> None:
    """A read asks the dispatcher only once SQLAlchemy marked the connection or its engine as
    having listeners: a listener on one connection, or on the Engine class, is so marked."""
    seen: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    with tenant_reads(CATALOG) as connection:
        target: Any = connection if where == "connection" else sa.engine.Engine
        sa.event.listen(target, "before_cursor_execute", capture)
        try:
            rows = read_rows(connection, by_name(), {"name": "public"})
        finally:
            sa.event.remove(target, "before_cursor_execute", capture)
    assert [r.nspname for r in rows] == ["public"]
    assert [s for s in seen if "pg_namespace" in s], seen


def test_a_connection_the_server_dropped_during_a_read_leaves_the_pool() -> None:
    """SQLAlchemy never saw the driver's error, so the read itself invalidates the connection."""
    engine().dispose()
    pid_of = sa.select(sa.func.pg_backend_pid().label("pid"))
    with tenant_reads(CATALOG) as connection:
        pid = read_rows(connection, pid_of, {})[0].pid
    with tenant_reads(CATALOG) as connection:  # the same pooled connection, then its backend exits
        terminate(pid)
        with pytest.raises(psycopg.OperationalError):
            read_rows(connection, by_name(), {"name": "public"})
        assert connection.invalidated
        connection.rollback()
    with tenant_reads(CATALOG) as connection:
        again = read_rows(connection, pid_of, {})
    assert again[0].pid != pid
