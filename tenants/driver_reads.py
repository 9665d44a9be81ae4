"""Read statements sent straight to the driver, compiled once per statement.

A list page's statement is built once per shape (taskflow.pagination), yet running it through
SQLAlchemy's Connection.execute still costs, on every request, the compiled-cache lookup, an
execution context, a cursor wrapper and a result object with its row processors: under load
(py-spy --gil on gunicorn's workers) more of a list request's CPU than PostgreSQL spent on
the query. Here a statement is compiled once, with SQLAlchemy's schema tokens; each schema's
rendering of that text is cached apart (a miss costs a substitution, never a compile, however
many schema-mode tenants there are), and every execution is psycopg's own cursor.execute of
the rendered text, rows as named tuples (attribute access and iteration, as a SQLAlchemy Row).

Only what needs no SQLAlchemy processing takes this path: no expanding (IN) or post-compile
parameters, no bind or result processor of the dialect for any parameter or column.
Everything else, and every connection whose engine has event listeners (a test or the
benchmark capturing statements with before_cursor_execute), goes through Connection.execute
unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row

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


@dataclass(frozen=True, eq=False)  # cached by identity (rendered's key)
class DriverStatement:
    """A statement as the driver takes it: the SQL text (schema names as SQLAlchemy's tokens
    when it was compiled for a translate map), the parameters fixed in it, and the compiler's
    identifier preparer, which renders the tokens."""

    sql: str
    fixed: Mapping[str, Any]
    preparer: Any


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
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    try:
        with driver.cursor(row_factory=namedtuple_row) as cursor:
            cursor.execute(sql, {**compiled.fixed, **params})
            return cursor.fetchall()
    except psycopg.Error:
        if driver.closed or driver.broken:
            connection.invalidate()  # SQLAlchemy did not see the error: drop it from the pool
        raise


def _watched(connection: sa.Connection) -> bool:
    """Whether a listener of the connection's or its engine's execution events stands now."""
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
    return DriverStatement(compiled.string, fixed, compiled.preparer)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def rendered(compiled: DriverStatement, schemas: tuple[tuple[Any, str], ...]) -> str:
    """The statement's SQL with the schema names of `schemas` ((placeholder, name) pairs), as
    SQLAlchemy renders them at execution: a cache miss costs a substitution, not a compile."""
    return str(compiled.preparer._render_schema_translates(compiled.sql, dict(schemas)))
