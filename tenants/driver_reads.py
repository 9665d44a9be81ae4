"""Read statements sent straight to the driver, compiled once per statement.

A list page's statement is built once per shape (taskflow.pagination), yet running it through
SQLAlchemy's Connection.execute still costs, on every request, the compiled-cache lookup, an
execution context, a cursor wrapper and a result object with its row processors: under load
(py-spy --gil on gunicorn's workers) more of a list request's CPU than PostgreSQL spent on
the query. Here a statement is compiled once, with SQLAlchemy's schema tokens; each schema's
rendering of that text is cached apart (a miss costs a substitution, never a compile, however
many schema-mode tenants there are), and every execution is psycopg's own cursor.execute of
the rendered text, rows as named tuples (attribute access and iteration, as a SQLAlchemy Row).

A read without a prelude (below) takes its rows in PostgreSQL's binary format when every
column the statement selects is of a type whose binary form psycopg loads as it loads the text
form (integers, strings, times, dates, booleans): a timestamptz is then eight bytes to convert
instead of text to parse. A statement selecting anything else (an enum, a type of an extension,
an expression SQLAlchemy cannot type) reads text, as psycopg loads an unknown type's text as a
string but its binary form as bytes.

Only what needs no SQLAlchemy processing takes this path: no expanding (IN) or post-compile
parameters, no bind or result processor of the dialect for any parameter or column.
Everything else, and every connection whose engine has event listeners (a test or the
benchmark capturing statements with before_cursor_execute), goes through Connection.execute
unchanged.

A connection may carry a prelude (`prelude_each_read`; tenants.binding.tenant_reads gives it
the tenant's binding): each read here then sends the prelude and its statement in one simple
Query message, one round trip and one implicit transaction (the server commits when the
message's last statement ends), so a list page needs no BEGIN and no COMMIT of its own. Before
SQLAlchemy executes a statement on such a connection, `begin_with_prelude` opens a transaction
with the prelude (one round trip), which `end_prelude` commits.

Why one Query and not a pipeline (the extended protocol's statements with one Sync): psycopg's
pipeline sends a Flush after the Sync whenever the answers have not arrived when it has sent
it. Behind PgBouncer in transaction mode, the server connection goes back to the pool at the
Sync's ReadyForQuery; a Flush that reaches PgBouncer after that takes a server connection for
the client, and the server, which answers a Flush with nothing, is held by that idle client
until its next query, while every other client waits for a server (seen: a request waiting
120 s for the one server connection of a test's pool, then a 503). A Query message has nothing
after it. The statement's parameters are then bound by psycopg on the client (ClientCursor:
libpq's quoting for the connection's encoding), and its rows come as text.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq
from psycopg.rows import RowMaker, namedtuple_row
from sqlalchemy.dialects.postgresql import CITEXT

# Statements are cached per process (taskflow.pagination builds each shape once); this bounds
# their compiled forms per schema as well.
COMPILED_CACHE_SIZE = 4096
# A statement any of these has a listener for goes through SQLAlchemy, so the listener sees it.
EXECUTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)
# Column types whose built-in PostgreSQL types psycopg loads alike from binary and text.
BINARY_TYPES = (sa.Integer, sa.String, sa.DateTime, sa.Date, sa.Boolean)
# The pool record's info key of a connection's prelude: its SQL with its values bound, `%` doubled.
PRELUDE = "prelude_each_read"


@dataclass(frozen=True, eq=False)  # cached by identity (rendered's key)
class DriverStatement:
    """A statement as the driver takes it: the SQL text (schema names as SQLAlchemy's tokens
    when it was compiled for a translate map), the parameters fixed in it, and the compiler's
    identifier preparer, which renders the tokens."""

    sql: str
    fixed: Mapping[str, Any]
    preparer: Any
    binary: bool = False  # rows in the binary format (BINARY_TYPES)


def read_rows(
    connection: sa.Connection, statement: sa.Select[Any], params: Mapping[str, Any]
) -> list[Any]:
    """All rows of `statement` with `params` on `connection` (in its schema translation)."""
    translate = connection.get_execution_options().get("schema_translate_map") or {}
    compiled = (
        None
        if _watched(connection)
        else driver_statement(statement, tuple(sorted(translate)), connection.dialect)
    )
    if compiled is None:
        return list(connection.execute(statement, dict(params)).all())
    sql = rendered(compiled, tuple(sorted(translate.items()))) if translate else compiled.sql
    record = connection.connection
    driver: psycopg.Connection[Any] = record.driver_connection  # type: ignore[assignment]
    prelude: str | None = record.info.get(PRELUDE)
    try:
        if prelude is None:
            with driver.cursor(row_factory=named_rows, binary=compiled.binary) as cursor:
                cursor.execute(sql, {**compiled.fixed, **params})
                return cursor.fetchall()
        # One Query message: the prelude, then the statement (see the module's docstring).
        with client_cursor(driver) as cursor:  # plain tuples for the prelude's row
            cursor.execute(prelude + sql, {**compiled.fixed, **params})
            cursor.nextset()  # past the prelude's row
            cursor.row_factory = named_rows  # made for the statement's result
            return cursor.fetchall()
    except psycopg.Error:
        if driver.closed or driver.broken:
            connection.invalidate()  # SQLAlchemy did not see the error: drop it from the pool
        raise


def client_cursor(driver: psycopg.Connection[Any]) -> psycopg.ClientCursor[Any]:
    """A cursor binding its parameters on the client, of the connection's own cursor class
    where that is a subclass of psycopg's (a tracer's: tracing's spans see this read as they
    see every other statement, its parameters as placeholders)."""
    factory: Any = driver.cursor_factory
    cursor_class: type[psycopg.ClientCursor[Any]] = _client_cursor_class(factory)
    return cursor_class(driver)


@functools.cache
def _client_cursor_class(factory: Any) -> Any:
    if factory is psycopg.Cursor:
        return psycopg.ClientCursor
    if issubclass(factory, psycopg.ClientCursor):
        return factory
    # The factory's methods first, then ClientCursor's binding, then psycopg's Cursor.
    return type(f"Client{factory.__name__}", (factory, psycopg.ClientCursor), {})


def named_rows(cursor: psycopg.Cursor[Any]) -> RowMaker[Any]:
    """psycopg's namedtuple_row, each row made by the tuple type's own constructor (C) instead
    of the namedtuple's `_make` (a Python frame per row, which checks a width the result's
    columns already fix)."""
    maker = namedtuple_row(cursor)
    row_type = getattr(maker, "__self__", None)  # `_make` is bound to the namedtuple class
    if not isinstance(row_type, type):
        return maker  # no result
    return functools.partial(tuple.__new__, row_type)


def prelude_each_read(connection: sa.Connection, sql: str, params: tuple[Any, ...]) -> None:
    """From now until `end_prelude`, every statement on `connection` runs after `sql` in the
    same transaction: a read here sends both in one round trip, each read in a transaction of
    its own (the driver in autocommit; each READ COMMITTED statement reads its own snapshot
    anyway); SQLAlchemy's statements run in one transaction `begin_with_prelude` opens."""
    record = connection.connection
    driver: psycopg.Connection[Any] = record.driver_connection  # type: ignore[assignment]
    if driver.pgconn.transaction_status == pq.TransactionStatus.IDLE:
        driver.autocommit = True
    # else a transaction is open already (a check on the connection's first use, as
    # tenants.citus.is_citus): each read goes in it, with the prelude, and end_prelude commits it
    # Bound here once (the values quoted by libpq), kept as the text each read's Query starts
    # with; its `%` doubled, as the statement after it is bound on the client too.
    with psycopg.ClientCursor(driver) as cursor:
        bound = cursor.mogrify(sql, params)
    record.info[PRELUDE] = bound.replace("%", "%%") + "; "


def begin_with_prelude(dbapi_connection: Any) -> None:
    """Open a transaction with the connection's prelude, if it has one and is not in a
    transaction already: BEGIN and the prelude in one round trip."""
    prelude = dbapi_connection.info.get(PRELUDE)
    if prelude is None:
        return
    driver: psycopg.Connection[Any] = dbapi_connection.driver_connection
    if driver.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return
    with client_cursor(driver) as cursor:  # one Query message, no parameters
        cursor.execute("BEGIN; " + prelude.replace("%%", "%"))


def end_prelude(connection: sa.Connection, *, commit: bool) -> None:
    """Drop the connection's prelude, end the transaction begin_with_prelude opened (committed
    or rolled back), and give the driver its transactions back."""
    record = connection.connection
    record.info.pop(PRELUDE, None)
    driver: psycopg.Connection[Any] = record.driver_connection  # type: ignore[assignment]
    if driver.closed or driver.broken:
        connection.invalidate()
        return
    try:
        if driver.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            driver.commit() if commit else driver.rollback()
        if driver.autocommit:
            driver.autocommit = False
    except psycopg.Error:
        connection.invalidate()  # nothing of it may go back to the pool
        raise


def _watched(connection: sa.Connection) -> bool:
    """Whether a listener of the connection's or its engine's execution events stands now.

    SQLAlchemy marks a connection and an engine (or their class) once any listener of their
    events is added, and dispatches none while neither is marked: then none stands, which is
    known without asking the dispatcher for each event (each ask joins the connection's listeners
    with the engine's in new objects)."""
    if not (connection._has_events or connection.engine._has_events):
        return False
    dispatch = connection.dispatch
    return any(bool(getattr(dispatch, event)) for event in EXECUTION_EVENTS)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def driver_statement(
    statement: sa.Select[Any], placeholders: tuple[Any, ...], dialect: sa.Dialect
) -> DriverStatement | None:
    """`statement` compiled for `dialect`, with SQLAlchemy's tokens where a schema translate map
    with the keys `placeholders` puts schema names (rendered per schema by `rendered`); None
    when it needs SQLAlchemy at execution time. Compiled once per statement, whatever the
    schema: a schema-mode tenant's first page costs no compile, however many tenants there are."""
    compiled = statement.compile(
        dialect=dialect,
        schema_translate_map=dict.fromkeys(placeholders) if placeholders else None,
    )
    if compiled.positional or "__[POSTCOMPILE" in compiled.string:
        return None
    binds = compiled.bind_names  # each parameter -> its name in the SQL
    if any(b.expanding or b.literal_execute for b in binds):
        return None
    if any(b.type.dialect_impl(dialect).bind_processor(dialect) is not None for b in binds):
        return None
    columns = statement.selected_columns
    if any(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns):
        return None
    fixed = {name: b.effective_value for b, name in binds.items() if not b.required}
    binary = all(_binary_as_text(c.type) for c in columns)
    return DriverStatement(compiled.string, fixed, compiled.preparer, binary)


def _binary_as_text(kind: sa.types.TypeEngine[Any]) -> bool:
    """Whether a column of `kind` reads the same in the binary format as in text: a built-in
    type psycopg has both loaders for (an Enum or a CITEXT is a String to SQLAlchemy, yet not a
    type psycopg knows)."""
    return isinstance(kind, BINARY_TYPES) and not isinstance(kind, sa.Enum | CITEXT)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def rendered(compiled: DriverStatement, schemas: tuple[tuple[Any, str], ...]) -> str:
    """The statement's SQL with the schema names of `schemas` ((placeholder, name) pairs), as
    SQLAlchemy renders them at execution: a cache miss costs a substitution, not a compile."""
    return str(compiled.preparer._render_schema_translates(compiled.sql, dict(schemas)))
