"""Staging a file by COPY of its bytes (PostgreSQL splits the records) stages exactly what the
strict reader stages, line numbers included, or declines the file (None) so the strict reader
reads it: never a third reading. Checked on edge cases named one by one and on generated files
(hypothesis), well-formed and mangled, against the real PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from taskflow.imports import staging
from taskflow.imports.reading import CsvRecords
from tenants.database_roles import owner_connection

HEADER = "external_id,project,title,description"
MALFORMED = "malformed"


@pytest.fixture
def pg() -> Iterator[psycopg.Connection]:
    """A connection whose every transaction is rolled back (the staging tables are TEMP)."""
    with owner_connection() as conn:
        yield conn
        conn.rollback()


def _staged_rows(pg: psycopg.Connection, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The staged rows with the file line each starts on, in file order."""
    return pg.execute(
        sql.SQL("SELECT {}, {} FROM import_staging ORDER BY line").format(
            sql.SQL(staging.physical_line("line")),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
    ).fetchall()


def by_copy(pg: psycopg.Connection, data: bytes) -> list[tuple[Any, ...]] | None:
    """What the COPY of the file's bytes stages (None: it declined the file)."""
    try:
        staging.create_tables(pg)
        file = io.BytesIO(data)
        records = CsvRecords(file)
        columns = records.read_header()
        staged = staging.copy_file(
            pg,
            columns,
            file,
            header_lines=records.lines.number,
            tick=lambda lines, done: None,
            every=1,
            batch_rows=2,
        )
        if staged is None:
            assert pg.execute("SELECT count(*) FROM import_staging").fetchone() == (0,)
            return None
        rows = _staged_rows(pg, columns)
        assert staged.rows == len(rows)
        return rows
    finally:
        pg.rollback()


def by_strict_reader(pg: psycopg.Connection, data: bytes) -> list[tuple[Any, ...]] | str:
    """What the strict reader stages (MALFORMED: it refused the file)."""
    try:
        staging.create_tables(pg)
        records = CsvRecords(io.BytesIO(data))
        columns = records.read_header()
        try:
            staging.copy_records(
                pg, columns, records, tick=lambda rows: None, every=1, batch_rows=2
            )
        except staging.MalformedFile:
            return MALFORMED
        return _staged_rows(pg, columns)
    finally:
        pg.rollback()


def file_of(*lines: str, end: str = "\n") -> bytes:
    return (end.join((HEADER, *lines)) + end).encode()


AGREED = [
    pytest.param(file_of("A-1,P1,plain,text", "A-2,P1,two,rows"), id="plain"),
    pytest.param(file_of('A-1,P1,"quoted, comma","say ""hi"""'), id="quotes and commas"),
    pytest.param(
        file_of('A-1,P1,multi,"one\ntwo\n\nfour"', "A-2,P1,after,x", 'A-3,P1,"t\nt",d'),
        id="quoted newlines shift the lines",
    ),
    pytest.param(
        file_of('A-1,P1,multi,"one\r\ntwo"', "A-2,P1,after,x", end="\r\n"), id="CRLF files"
    ),
    pytest.param(file_of('A-1,P1,cr,"a\rb"'), id="a CR inside quotes"),
    pytest.param(file_of('A-1,P1,,""', 'A-2,P1,"",'), id="empty, quoted or not"),
    pytest.param(file_of("A-1,P1,Überprüfung ✓ 日本,\ufeffinner BOM 😀"), id="unicode"),
    pytest.param(file_of("A-1,P1,back\\slash,\\N", 'A-2,P1,"\\.",x'), id="backslashes"),
    pytest.param(file_of("A-1,P1,  spaced  ,\t tab"), id="spaces kept"),
    pytest.param(file_of("A-1,P1,no final break,x")[:-1], id="no line break at the end"),
    pytest.param(file_of("A-1,P1,trailing,blank lines") + b"\n\n", id="trailing blank lines"),
    pytest.param(("\ufeff" + HEADER + "\nA-1,P1,bom,x\n").encode(), id="BOM before the header"),
    pytest.param(
        b'"external_id","project",title,"description\n"\nA-1,P1,t,d\n', id="quoted header"
    ),
    pytest.param(file_of(), id="header only"),
]


@pytest.mark.parametrize("data", AGREED)
def test_copy_of_the_bytes_stages_what_the_strict_reader_stages(
    pg: psycopg.Connection, data: bytes
) -> None:
    staged = by_copy(pg, data)
    assert staged is not None, "declined a file both parsers read alike"
    assert staged == by_strict_reader(pg, data)


def test_a_missing_column_stays_null_and_an_empty_one_is_empty(pg: psycopg.Connection) -> None:
    data = b"external_id,project,title\nA-1,P1,\n"
    try:
        staging.create_tables(pg)
        file = io.BytesIO(data)
        records = CsvRecords(file)
        columns = records.read_header()
        assert staging.copy_file(
            pg, columns, file, header_lines=1, tick=lambda *_: None, every=1, batch_rows=9
        )
        row = pg.execute("SELECT line, title, description FROM import_staging").fetchone()
    finally:
        pg.rollback()
    assert row == (2, "", None)


DECLINED = [
    pytest.param(file_of('A-1,P1,ab"c,d"'), id="quote inside an unquoted field"),
    pytest.param(file_of('A-1,P1,"ab"c,d'), id="text after a closing quote"),
    pytest.param(file_of('A-1,P1, "x",d'), id="space before an opening quote"),
    pytest.param(file_of("A-1,P1,t,d", "", "A-2,P1,t,d"), id="blank line"),
    pytest.param(file_of("A-1,P1,t,d", "\\.", "A-2,P1,t,d"), id="end-of-data marker"),
    pytest.param(file_of("A-1,P1,t,d\rA-2,P1,t,d"), id="lone CR ends a record"),
    pytest.param(
        file_of("A-1,P1,t,d", "A-2,P1,t,e", end="\r\n").replace(b"e\r\n", b"e\n"), id="mixed"
    ),
    pytest.param(file_of("A-1,P1,t,d", "A-2,P1,t,d").replace(b"A-1,", b"A-1,P1,"), id="ragged"),
    pytest.param(file_of("A-1,P1,t,a\x00b"), id="NUL byte"),
    pytest.param(file_of("A-1,P1,t,d").replace(b"t,d", b"t,caf\xe9"), id="not UTF-8"),
    pytest.param(file_of('A-1,P1,t,"never closed'), id="unterminated quote"),
    pytest.param(
        file_of(f"A-1,P1,t,{'x' * (csv.field_size_limit() + 1)}"), id="field past the limit"
    ),
    pytest.param(file_of(f"A-1,P1,t,{'é' * csv.field_size_limit()}"), id="long in bytes only"),
    pytest.param(
        file_of("A-1,P1,t,d", f'A-2,P1,t,"{("x" * 99 + chr(10)) * 1400}"'),
        id="field past the limit on short lines",
    ),
]


@pytest.mark.parametrize("data", DECLINED)
def test_files_postgresql_could_read_otherwise_go_to_the_strict_reader(
    pg: psycopg.Connection, data: bytes
) -> None:
    assert by_copy(pg, data) is None
    by_strict_reader(pg, data)  # and that one reads them (or reports their faults)


def test_records_longer_than_a_chunk_and_cut_anywhere_stage_whole(
    pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging, "CHUNK_BYTES", 7)  # cuts inside fields, quotes and CRLFs
    data = file_of('A-1,P1,"a ""long"", quoted\r\ntitle",d', "A-2,P1,t,d", end="\r\n")
    staged = by_copy(pg, data)
    assert staged is not None
    assert staged == by_strict_reader(pg, data)


FIELD = st.text(alphabet=st.sampled_from('ab ,"\r\n\\.é✓\ufeff'), max_size=8)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(FIELD, min_size=4, max_size=4), max_size=6),
    end=st.sampled_from(["\n", "\r\n"]),
)
def test_files_csv_writer_wrote_are_staged_by_copy_as_the_strict_reader_stages_them(
    pg: psycopg.Connection, rows: list[list[str]], end: str
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=end)
    writer.writerow(HEADER.split(","))
    writer.writerows(rows)
    data = out.getvalue().encode()
    staged, strict = by_copy(pg, data), by_strict_reader(pg, data)
    # csv.writer leaves a CR unquoted when the line ends are LF: the strict reader refuses it or
    # takes it for a line end; PostgreSQL, which reads such files otherwise, is never given them.
    if staged is None:
        assert strict == MALFORMED or any("\r" in field for row in rows for field in row), data
    else:
        assert staged == strict, data


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(FIELD, min_size=4, max_size=4), max_size=5),
    cuts=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from([b'"', b",", b"\r", b"\n", b"\\.", b"\x00", b"\xff", b"a", b" "]),
        ),
        max_size=2,
    ),
)
def test_mangled_files_are_declined_or_staged_as_the_strict_reader_stages_them(
    pg: psycopg.Connection, rows: list[list[str]], cuts: list[tuple[int, bytes]]
) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    body = out.getvalue().encode()
    for at, inserted in cuts:
        at %= len(body) + 1
        body = body[:at] + inserted + body[at:]
    data = HEADER.encode() + b"\n" + body
    staged = by_copy(pg, data)
    if staged is not None:
        assert staged == by_strict_reader(pg, data), data
