"""The error report of an import: a CSV of line, column, reason, written to a file on disk.

Each rejected row's fault is followed by the row's own values as the file had them (its columns,
in its order), so a user can fix the rows and upload them again without the first three columns.
Written by streaming (COPY ... TO STDOUT for validation faults), so a file with millions of bad
rows never sits in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from taskflow.imports.columns import COLUMNS
from taskflow.imports.reading import Malformed
from taskflow.imports.staging import physical_line

HEADER = ("line", "column", "reason")


def rejects_csv(columns: Sequence[str]) -> sql.Composed:
    """COPY of the faults in line order, each with the file's values of its row."""
    values = sql.SQL("").join(
        sql.SQL(", s.{}").format(sql.Identifier(c)) for c in columns if c in COLUMNS
    )
    return sql.SQL(
        'COPY (SELECT {} AS line, r."column", r.reason{} FROM import_rejects r'
        " LEFT JOIN import_staging s ON s.line = r.line ORDER BY r.line, r.ord)"
        " TO STDOUT (FORMAT csv, HEADER true)"
    ).format(sql.SQL(physical_line("r.line")), values)


def write_rejects(pg: psycopg.Connection, path: Path, columns: Sequence[str]) -> None:
    """The staged rows' validation faults, in line order, with the rows' values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out, pg.cursor() as cursor, cursor.copy(rejects_csv(columns)) as copy:
        for chunk in copy:
            out.write(chunk)


def write_malformed(faults: Iterable[Malformed], path: Path) -> None:
    """Structural faults found while reading the file (the column is empty: the row has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows((f.line, "", f.reason) for f in faults)
