"""The import's temporary tables, and COPY of the file into them: its bytes, PostgreSQL
splitting the records (copy_file), or the strict reader's records (copy_records).

Every table here is TEMP ... ON COMMIT DROP: it lives in the import's own transaction and session,
never in a tenant schema, and vanishes with a commit or a rollback (safe on a pooled connection).
Statements run on the psycopg connection under the bound SQLAlchemy session, so they share its
transaction and its tenant settings.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session

from taskflow.imports import dialect
from taskflow.imports.columns import FILE_COLUMNS
from taskflow.imports.reading import Malformed, Record

MALFORMED_REPORTED = 100

# The file's records as text, one column per file column (typed only once validated). `line` is
# given by the strict reader; COPY of the file's bytes leaves it to its sequence (the record's
# number after the header's lines, made physical by import_line_shifts where records span lines).
CREATE_STAGING = (
    "CREATE TEMP TABLE import_staging (line bigserial NOT NULL, "
    + ", ".join(f"{c.name} text" for c in FILE_COLUMNS)
    + ") ON COMMIT DROP"
)
# After the record staged on `after_line`, each following one starts `shift` lines further down the
# file than its staged line says (the line breaks inside quoted fields up to it); empty when
# every record is one line, and always for the strict reader, whose lines are physical.
CREATE_LINE_SHIFTS = (
    "CREATE TEMP TABLE import_line_shifts (after_line bigint PRIMARY KEY, shift bigint NOT NULL)"
    " ON COMMIT DROP"
)
CREATE_REJECTS = """
CREATE TEMP TABLE import_rejects (
  line bigint NOT NULL, ord smallint NOT NULL, "column" text NOT NULL, reason text NOT NULL
) ON COMMIT DROP;
CREATE INDEX import_rejects_line ON import_rejects (line);
"""
CREATE_MEMBERS = "CREATE TEMP TABLE import_members_raw (email text, user_id bigint) ON COMMIT DROP"

# An email maps to a member only when exactly one member has it (case-insensitive).
MEMBERS_BY_EMAIL = """
CREATE TEMP TABLE import_members ON COMMIT DROP AS
SELECT lower(btrim(email)) AS email,
       CASE WHEN count(DISTINCT user_id) = 1 THEN min(user_id) END AS user_id
FROM import_members_raw WHERE btrim(email) <> '' GROUP BY 1;
ANALYZE import_members;
"""


def driver_connection(session: Session) -> psycopg.Connection:
    """The psycopg connection of the session's transaction (begun, so the tenant is bound)."""
    dbapi = session.connection().connection.driver_connection
    assert isinstance(dbapi, psycopg.Connection)
    return dbapi


def create_tables(pg: psycopg.Connection) -> None:
    pg.execute(CREATE_STAGING)
    pg.execute(CREATE_LINE_SHIFTS)
    pg.execute(CREATE_REJECTS)
    pg.execute(CREATE_MEMBERS)


def create_member_table(pg: psycopg.Connection) -> None:
    pg.execute(CREATE_MEMBERS)


class MalformedFile(Exception):
    """The file is not well-formed CSV; `faults` holds the first ones, each with its line."""

    def __init__(self, faults: list[Malformed], rows_read: int) -> None:
        super().__init__(f"{len(faults)} malformed lines, the first on line {faults[0].line}")
        self.faults = faults
        self.rows_read = rows_read


class _Stop(Exception):
    pass


# Above any line a file can have: the end of the last batch.
MAX_LINE = 2**62


@dataclass
class Staged:
    """The staged rows: how many, and the last line of each full batch of `batch_rows` rows (the
    write goes batch by batch: lines after one end, up to the next)."""

    rows: int = 0
    batch_rows: int = 1
    batch_ends: list[int] = field(default_factory=list)

    def batches(self) -> list[tuple[int, int, int]]:
        """(after line, up to line, rows staged up to it) of each batch, in line order."""
        bounds = [0, *self.batch_ends]
        batches = [
            (after, end, number * self.batch_rows)
            for number, (after, end) in enumerate(zip(bounds, self.batch_ends, strict=False), 1)
        ]
        if self.rows > len(self.batch_ends) * self.batch_rows or not batches:
            batches.append((bounds[-1], MAX_LINE, self.rows))
        return batches


def copy_records(
    pg: psycopg.Connection,
    columns: tuple[str, ...],
    records: Iterable[Record | Malformed],
    *,
    tick: Callable[[int], None],
    every: int,
    batch_rows: int,
) -> Staged:
    """COPY well-formed records into the staging table; what was staged, or MalformedFile.

    At the first malformed record the COPY is abandoned (the transaction is then unusable: the
    caller rolls back) and the rest of the file is only scanned, for more faults to report.
    """
    items: Iterator[Record | Malformed] = iter(records)
    statement = sql.SQL("COPY import_staging (line, {}) FROM STDIN").format(_columns(columns))
    rows = 0
    ends: list[int] = []
    first: Malformed | None = None
    try:
        with pg.cursor() as cursor, cursor.copy(statement) as copy:
            write = copy.write_row
            for item in items:
                if isinstance(item, Malformed):
                    first = item
                    raise _Stop
                write((item.line, *item.fields))
                rows += 1
                if rows % every == 0:
                    tick(rows)
                if rows % batch_rows == 0:
                    ends.append(item.line)
    except _Stop:
        pass
    if first is None:
        return Staged(rows=rows, batch_rows=batch_rows, batch_ends=ends)
    faults = [first]
    for item in items:
        if isinstance(item, Malformed):
            faults.append(item)
            if len(faults) >= MALFORMED_REPORTED:
                break
        else:
            rows += 1
    raise MalformedFile(faults, rows)


# Bytes read from the file at a time by the COPY of its bytes (memory stays bounded by a few).
CHUNK_BYTES = 1024 * 1024


def physical_line(line: str) -> str:
    """SQL for the file's line on which the record staged on `line` (an SQL expression) starts."""
    return (
        f"({line} + coalesce((SELECT x.shift FROM import_line_shifts x WHERE x.after_line < {line}"
        " ORDER BY x.after_line DESC LIMIT 1), 0))"
    )


def _columns(columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def copy_file(
    pg: psycopg.Connection,
    columns: tuple[str, ...],
    source: BinaryIO,
    *,
    header_lines: int,
    tick: Callable[[int, int], None],
    every: int,
    batch_rows: int,
) -> Staged | None:
    """COPY the file's bytes (`source` is just past its header, `header_lines` long) into the
    staging table, PostgreSQL splitting the records; what was staged, or None when the file may
    read differently than under the strict reader (then nothing is staged: read it with that).

    Far cheaper than splitting every record in Python and sending it again field by field. Runs
    in a savepoint, so a file PostgreSQL refuses (invalid UTF-8, a NUL byte, mixed line endings,
    ragged rows) leaves the transaction usable for the strict reader, which reports the faults.
    `tick(lines, bytes)` is called about every `every` lines (progress, and a chance to cancel).
    """
    checked = dialect.Checked(len(columns))
    names = _columns(columns)
    statement = sql.SQL(
        "COPY import_staging ({}) FROM STDIN (FORMAT csv, FORCE_NOT_NULL ({}), ENCODING 'UTF8')"
    ).format(names, names)
    done = ticked = 0
    try:
        with pg.transaction():
            pg.execute(
                "SELECT setval(pg_get_serial_sequence('import_staging', 'line'), %s, false)",
                [header_lines + 1],
            )
            with pg.cursor() as cursor:
                with cursor.copy(statement) as copy:
                    while chunk := source.read(CHUNK_BYTES):
                        copy.write(checked.feed(chunk))
                        done += len(chunk)
                        if checked.lines >= ticked + every:
                            ticked = checked.lines - checked.lines % every
                            tick(checked.lines, done)
                    copy.write(checked.finish())
                rows = cursor.rowcount
            # A field longer than a line is either on a line longer than the limit, or in a
            # record that spans lines: without either, there is nothing to look for.
            spanning = rows != checked.lines
            if (spanning or checked.longest_line > csv.field_size_limit()) and _check_staged(
                pg, columns, spanning=spanning
            ):
                raise dialect.NotSameDialect
    except (dialect.NotSameDialect, psycopg.errors.DataError):
        return None
    ends = [header_lines + number * batch_rows for number in range(1, rows // batch_rows + 1)]
    return Staged(rows=rows, batch_rows=batch_rows, batch_ends=ends)


def _check_staged(pg: psycopg.Connection, columns: tuple[str, ...], *, spanning: bool) -> bool:
    """One pass over the staged fields: whether one may be longer than the strict reader allows
    (it calls the record malformed; PostgreSQL has no such limit), and, when records span lines
    (line breaks in quoted fields), how many lines further down the file the records after each
    such one start than their staged line says (import_line_shifts).

    Bytes, not characters: octet_length reads the stored size, never the text (a field long in
    bytes but not in characters goes to the strict reader too)."""
    limit = sql.Literal(csv.field_size_limit())
    longer = sql.SQL(" OR ").join(
        sql.SQL("octet_length({}) > {}").format(sql.Identifier(c), limit) for c in columns
    )
    if not spanning:
        row = pg.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM import_staging WHERE {})").format(longer)
        ).fetchone()
        return bool(row and row[0])
    breaks = sql.SQL(" + ").join(
        sql.SQL("(octet_length({0}) - octet_length(replace({0}, E'\\n', '')))").format(
            sql.Identifier(c)
        )
        for c in columns
    )
    broken = sql.SQL(" OR ").join(
        sql.SQL("strpos({}, E'\\n') > 0").format(sql.Identifier(c)) for c in columns
    )
    row = pg.execute(
        sql.SQL(
            "WITH marked AS MATERIALIZED ("
            "  SELECT line, {breaks} AS breaks, {longer} AS longer FROM import_staging"
            "  WHERE {broken} OR {longer}"
            "), shifts AS ("
            "  INSERT INTO import_line_shifts (after_line, shift)"
            "  SELECT line, sum(breaks) OVER (ORDER BY line) FROM marked WHERE breaks > 0"
            ") SELECT coalesce(bool_or(longer), false) FROM marked"
        ).format(breaks=breaks, longer=longer, broken=broken)
    ).fetchone()
    pg.execute("ANALYZE import_line_shifts")
    return bool(row and row[0])


def analyze_staging(pg: psycopg.Connection, staged: Staged) -> None:
    """Statistics for the planner (without them it guesses the staging table's size), and an
    index on `line` when the write takes more than one batch (each reads a range of lines).
    Only the staging table: the tenant's tables are autovacuum's. All its columns: without the
    wide ones' widths the planner would size hashes of staged rows far too small."""
    if len(staged.batches()) > 1:
        pg.execute("CREATE INDEX import_staging_line ON import_staging (line)")
    pg.execute("ANALYZE import_staging")


def analyze_rejects(pg: psycopg.Connection) -> None:
    """Statistics of the rejects before the write, whose batches skip them by an anti join: the
    planner then hashes them (or probes their index), never rescans them for every row."""
    pg.execute("ANALYZE import_rejects")


def load_members(pg: psycopg.Connection, members: Iterable[tuple[str, int]]) -> None:
    """The tenant's members (email, user id), for assignee emails; given by the caller, since
    who belongs to a tenant is the control plane's knowledge, not TaskFlow's."""
    with (
        pg.cursor() as cursor,
        cursor.copy("COPY import_members_raw (email, user_id) FROM STDIN") as copy,
    ):
        for email, user_id in members:
            copy.write_row((email, user_id))
    pg.execute(MEMBERS_BY_EMAIL)
