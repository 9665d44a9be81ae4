"""Forced row-level security: turned off only for a node move's copy, and restored after a crash.

Every table with row-level security forces it on its owner too, in every placement
(ARCHITECTURE, "Data placement"). One thing turns forcing off: a node move
(tenants.moving.move_tenant_to_node), for citus_schema_move's copy, which runs as the owner and
would otherwise copy no row. It does so in `unforced_for_copy`, holding the schema's move lock
(a session advisory lock; the move holds it from start to end, `node_move_lock`) on the
connection that runs the copy, so the lock also says whether a node move is live.

A move process killed inside that window leaves the schema's tables not forcing row-level
security. The catalog itself records it (`relforcerowsecurity` off where `relrowsecurity` is
on), and the move lock goes with the dead process's connection: at once when it was idle, or
once the statement it was running (the copy) has finished. `restore_forced_row_security` forces
such tables again, for each schema whose move lock it can take (a live move holds it and forces
its tables again itself); it runs at the start of every node move and from beat.

Never turns forcing off outside `unforced_for_copy`; never touches the app role's view (it owns
nothing and is filtered by the policies either way).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tenants.problems import Problem

# Advisory-lock class of node moves, keyed by hashtext(schema): held while forcing is off.
MOVE_LOCK_SPACE = 7_410_003

# Tables with row-level security that do not force it on their owner, by schema.
UNFORCED = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND NOT c.relforcerowsecurity
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
ORDER BY n.nspname, c.relname
"""

# The tables of a schema with row-level security on (forced or not), by name.
ROW_SECURE = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p') AND c.relrowsecurity
ORDER BY c.relname
"""


class NodeMoveUnderWay(Problem):
    """Another node move holds the schema's move lock."""

    status = 409
    title = "Node move under way"


@dataclass
class Restoration:
    """What `restore_forced_row_security` did: tables forced again by schema, schemas left to
    the live move that holds their lock."""

    restored: dict[str, list[str]] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)


def unforced_tables(conn: psycopg.Connection, schema: str | None = None) -> dict[str, list[str]]:
    """The tables (of `schema`, or of every schema) with row-level security not forced."""
    found: dict[str, list[str]] = {}
    for nspname, relname in conn.execute(UNFORCED, {"schema": schema}):
        found.setdefault(str(nspname), []).append(str(relname))
    return found


def _alter(conn: psycopg.Connection, schema: str, tables: list[str], *, force: bool) -> None:
    """FORCE (or NO FORCE) row-level security on `tables`, one statement per query (Citus)."""
    mode = sql.SQL("FORCE" if force else "NO FORCE")
    for table in tables:
        conn.execute(
            sql.SQL("ALTER TABLE {} {} ROW LEVEL SECURITY").format(
                sql.Identifier(schema, table), mode
            )
        )


def _move_lock_key(schema: str) -> sql.Composed:
    return sql.SQL("{}, hashtext({})").format(sql.Literal(MOVE_LOCK_SPACE), sql.Literal(schema))


@contextmanager
def node_move_lock(conn: psycopg.Connection, schema: str) -> Iterator[None]:
    """The schema's move lock, held on `conn` (autocommit) for the block: a node move holds it
    from start to end on the connection that runs the copy, so it outlives a killed process
    until the statement under way has finished. Refuses at once (NodeMoveUnderWay) when another
    node move of the schema holds it."""
    row = conn.execute(
        sql.SQL("SELECT pg_try_advisory_lock({})").format(_move_lock_key(schema))
    ).fetchone()
    if not (row and row[0]):
        raise NodeMoveUnderWay(f"Another node move of {schema} is under way.")
    try:
        yield
    finally:
        conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(_move_lock_key(schema)))


def node_move_live(conn: psycopg.Connection, schema: str) -> bool:
    """Whether a node move of `schema` is running now (its move lock is held)."""
    with conn.transaction():
        row = conn.execute(
            sql.SQL("SELECT pg_try_advisory_xact_lock({})").format(_move_lock_key(schema))
        ).fetchone()
    return not (row and row[0])


@contextmanager
def unforced_for_copy(conn: psycopg.Connection, schema: str) -> Iterator[None]:
    """Row-level security not forced on `schema`'s tables inside the block, forced again after
    it whatever happens; the schema's move lock held on `conn` (autocommit) throughout, so a
    repair never forces them under a live copy. Each switch commits at once: the copy runs on
    connections of its own, which must see it."""
    conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(_move_lock_key(schema)))
    try:
        tables = [str(row[0]) for row in conn.execute(ROW_SECURE, (schema,))]
        with conn.transaction():
            _alter(conn, schema, tables, force=False)
        try:
            yield
        finally:
            with conn.transaction():
                _alter(conn, schema, tables, force=True)
    finally:
        conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(_move_lock_key(schema)))


def restore_forced_row_security(conn: psycopg.Connection) -> Restoration:
    """Force row-level security again on every table left without it by an interrupted node
    move, schema by schema, each in its own transaction under that schema's move lock (taken
    without waiting: a schema whose lock a live move holds is reported busy). `conn` is in
    autocommit mode. On a healthy catalog: one read, nothing changed."""
    done = Restoration()
    for schema in unforced_tables(conn):
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT pg_try_advisory_xact_lock({})").format(_move_lock_key(schema))
            ).fetchone()
            if not (row and row[0]):
                done.busy.append(schema)
                continue
            tables = unforced_tables(conn, schema).get(schema, [])  # read again, under the lock
            _alter(conn, schema, tables, force=True)
            if tables:
                done.restored[schema] = tables
    return done
