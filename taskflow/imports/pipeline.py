"""The import pipeline: file -> COPY into staging -> set-based validation -> one upsert.

Runs inside the caller's transaction on a session bound to one tenant; `schema` is the real
schema name taken from that binding (raw SQL does not go through the schema translate map).
Nothing is committed here. A file that cannot be imported raises ImportRejected after writing
its error report; the caller rolls back, so nothing is written. Memory stays bounded whatever
the file's size: records stream from disk into COPY one at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.orm import Session

from taskflow.imports import errors_report, staging, validation
from taskflow.imports.reading import CsvRecords
from taskflow.imports.writing import Written, upsert_tasks

# Share of the progress bar each phase ends at; writing is one statement, reported when done.
LOADED_AT = 40.0
VALIDATED_AT = 50.0
# Transaction-local: the hash joins and the duplicate check over the whole file stay in memory.
SET_WORK_MEM = "SET LOCAL work_mem = '64MB'"


class ImportMode(enum.StrEnum):
    ALL_OR_NOTHING = "all_or_nothing"
    SKIP_INVALID = "skip_invalid"


class Phase(enum.StrEnum):
    LOADING = "loading"
    VALIDATING = "validating"
    WRITING = "writing"


@dataclass(frozen=True)
class ImportProgress:
    phase: Phase
    rows_read: int
    percent: float


@dataclass(frozen=True)
class ImportOutcome:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    malformed: bool = False
    first_faults: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.malformed:
            head = "The file is not well-formed CSV; nothing was written."
        elif self.rejected:
            head = f"{self.rejected} of {self.rows_read} rows were rejected."
        else:
            return f"{self.rows_read} rows: {self.inserted} inserted, {self.updated} updated."
        return " ".join((head, *self.first_faults))


class ImportRejected(Exception):
    """The import must not be committed (malformed file, or rejects in all-or-nothing mode)."""

    def __init__(self, outcome: ImportOutcome) -> None:
        super().__init__(outcome.summary)
        self.outcome = outcome


class ImportCancelled(Exception):
    """The caller's cancel check said stop; roll back."""


def _never() -> bool:
    return False


def _ignore(_: ImportProgress) -> None:
    return None


def run_import(
    *,
    session: Session,
    schema: str,
    tenant_id: int,
    source: Path,
    mode: ImportMode,
    members: Iterable[tuple[str, int]] = (),
    errors_path: Path | None = None,
    progress: Callable[[ImportProgress], None] = _ignore,
    cancelled: Callable[[], bool] = _never,
    progress_every: int = 50_000,
) -> ImportOutcome:
    """Import `source` into the tenant's tasks within the session's transaction.

    `members` maps the tenant's members' emails to user ids (for the assignee column).
    Raises ImportRejected (errors written to `errors_path`) or ImportCancelled.
    """
    pg = staging.driver_connection(session)
    pg.execute(SET_WORK_MEM)
    staging.create_tables(pg)
    size = max(source.stat().st_size, 1)

    with source.open("rb") as file:
        records = CsvRecords(file)
        columns = records.read_header()

        def tick(rows: int) -> None:
            if cancelled():
                raise ImportCancelled
            progress(ImportProgress(Phase.LOADING, rows, LOADED_AT * records.bytes_read / size))

        tick(0)
        try:
            rows = staging.copy_records(pg, columns, records, tick=tick, every=progress_every)
        except staging.MalformedFile as exc:
            if errors_path is not None:
                errors_report.write_malformed(exc.faults, errors_path)
            faults = tuple(f"Line {f.line}: {f.reason}." for f in exc.faults[:3])
            raise ImportRejected(
                ImportOutcome(rows_read=exc.rows_read, malformed=True, first_faults=faults)
            ) from exc

    progress(ImportProgress(Phase.VALIDATING, rows, LOADED_AT))
    staging.analyze_staging(pg)
    staging.load_members(pg, members if "assignee" in columns else ())
    rejected = validation.find_rejects(pg, schema=schema, tenant_id=tenant_id)
    if "id" in columns:
        rejected = validation.find_id_faults(pg, schema=schema, tenant_id=tenant_id)
    if rejected:
        rejected = validation.find_duplicates(pg)
        _stop_if_all_or_nothing(pg, mode, rows, rejected, errors_path, columns)
    if cancelled():
        raise ImportCancelled

    progress(ImportProgress(Phase.WRITING, rows, VALIDATED_AT))
    written = _write(pg, schema, tenant_id, columns, skip_rejected=rejected > 0)
    if written is None:  # an external id repeated in the file: find them, then decide
        rejected = validation.find_duplicates(pg)
        _stop_if_all_or_nothing(pg, mode, rows, rejected, errors_path, columns)
        written = _write(pg, schema, tenant_id, columns, skip_rejected=True)
        assert written is not None
    unwritten = rows - rejected - written.inserted - written.updated
    # Unwritten rows are unchanged ones, or ones whose external id is a deleted task's.
    if unwritten and validation.find_deleted(pg, schema=schema, tenant_id=tenant_id):
        rejected = validation.rejected_lines(pg)
        _stop_if_all_or_nothing(pg, mode, rows, rejected, errors_path, columns)
    if rejected and errors_path is not None:
        errors_report.write_rejects(pg, errors_path, columns)
    return ImportOutcome(
        rows_read=rows,
        inserted=written.inserted,
        updated=written.updated,
        unchanged=rows - rejected - written.inserted - written.updated,
        rejected=rejected,
        first_faults=_first_faults(pg) if rejected else (),
    )


def _write(
    pg: psycopg.Connection,
    schema: str,
    tenant_id: int,
    columns: tuple[str, ...],
    *,
    skip_rejected: bool,
) -> Written | None:
    """The upsert, or None when the file repeats an external id (the upsert is then undone).

    A savepoint rather than a duplicate check up front: the check is a pass over the whole file
    that a clean file never needs.
    """
    try:
        with pg.transaction():
            return upsert_tasks(
                pg, schema=schema, tenant_id=tenant_id, columns=columns, skip_rejected=skip_rejected
            )
    except psycopg.errors.CardinalityViolation:
        return None


def _stop_if_all_or_nothing(
    pg: psycopg.Connection,
    mode: ImportMode,
    rows: int,
    rejected: int,
    errors_path: Path | None,
    columns: tuple[str, ...],
) -> None:
    if mode != ImportMode.ALL_OR_NOTHING:
        return
    if errors_path is not None:
        errors_report.write_rejects(pg, errors_path, columns)
    raise ImportRejected(
        ImportOutcome(rows_read=rows, rejected=rejected, first_faults=_first_faults(pg))
    )


def _first_faults(pg: psycopg.Connection, limit: int = 3) -> tuple[str, ...]:
    """The first few faults, for a one-line summary (the report has them all)."""
    rows = pg.execute(
        'SELECT line, "column", reason FROM import_rejects ORDER BY line, ord LIMIT %s', [limit]
    ).fetchall()
    return tuple(f"Line {line}, {column}: {reason}." for line, column, reason in rows)
