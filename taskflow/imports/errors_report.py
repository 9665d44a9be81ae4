"""The error report of an import: a CSV of line, column, reason, written to a file on disk.

Written by streaming (COPY ... TO STDOUT for validation faults), so a file with millions of bad
rows never sits in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import psycopg

from taskflow.imports.reading import Malformed

HEADER = ("line", "column", "reason")

REJECTS_CSV = (
    'COPY (SELECT line, "column", reason FROM import_rejects ORDER BY line, ord)'
    " TO STDOUT (FORMAT csv, HEADER true)"
)


def write_rejects(pg: psycopg.Connection, path: Path) -> None:
    """The staged rows' validation faults, in line order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out, pg.cursor() as cursor, cursor.copy(REJECTS_CSV) as copy:
        for chunk in copy:
            out.write(chunk)


def write_malformed(faults: Iterable[Malformed], path: Path) -> None:
    """Structural faults found while reading the file (the column is empty: the row has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows((f.line, "", f.reason) for f in faults)
