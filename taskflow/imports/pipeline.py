"""The import pipeline: file -> COPY into staging -> set-based validation -> upsert by batches.

Runs inside the caller's transaction on a session bound to one tenant; `schema` is the real
schema name taken from that binding (raw SQL does not go through the schema translate map).
Nothing is committed here. A file that cannot be imported raises ImportRejected after writing
its error report; the caller rolls back, so nothing is written. Memory stays bounded whatever
the file's size: the file streams from disk into COPY a chunk at a time (its bytes, PostgreSQL
splitting the records, or record by record from the strict reader). The write goes in batches of
staged lines, each reported as progress (and a chance to cancel), so the bar moves while rows are
written.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg
from sqlalchemy.orm import Session

from taskflow.imports import errors_report, staging, validation
from taskflow.imports.reading import CsvRecords
from taskflow.imports.writing import Written, has_external_ids, write_batch

# Share of the progress bar each phase ends at; the rest (to 100) is the caller's commit.
LOADED_AT = 40.0
VALIDATED_AT = 50.0
WRITTEN_AT = 98.0
WRITE_BATCH_ROWS = 50_000
# Transaction-local settings of the import. work_mem: the hash joins and the duplicate check
# over the whole file stay in memory. jit off: the planner sees transition tables and staged
# rows by the tens of thousands, so the history trigger's INSERT of every batch went over
# jit_above_cost and was compiled anew each time (0.3-0.9 s a batch of 50,000 updated rows, by
# auto_explain), for statements whose time is index maintenance and I/O, not expressions.
SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")


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
    batch_rows: int = WRITE_BATCH_ROWS,
) -> ImportOutcome:
    """Import `source` into the tenant's tasks within the session's transaction.

    `members` maps the tenant's members' emails to user ids (for the assignee column).
    Raises ImportRejected (errors written to `errors_path`) or ImportCancelled.
    """
    pg = staging.driver_connection(session)
    for setting in SETTINGS:
        pg.execute(setting)
    staging.create_tables(pg)
    size = max(source.stat().st_size, 1)

    with source.open("rb") as file:
        records = CsvRecords(file)
        columns = records.read_header()

        def tick(rows: int, bytes_read: int) -> None:
            if cancelled():
                raise ImportCancelled
            progress(ImportProgress(Phase.LOADING, rows, LOADED_AT * bytes_read / size))

        tick(0, records.bytes_read)
        # PostgreSQL splits the records unless the file may read differently than under the
        # strict reader (taskflow.imports.dialect); that one then reads it, and reports faults.
        staged = staging.copy_file(
            pg,
            columns,
            file,
            header_lines=records.lines.number,
            tick=tick,
            every=progress_every,
            batch_rows=batch_rows,
        )
        if staged is None:
            file.seek(0)
            staged = _copy_records(
                file, pg, errors_path, tick=tick, every=progress_every, batch_rows=batch_rows
            )

    rows = staged.rows
    progress(ImportProgress(Phase.VALIDATING, rows, LOADED_AT))
    staging.analyze_staging(pg, staged)
    staging.load_members(pg, members if "assignee" in columns else ())
    validation.find_rejects(pg, schema=schema, tenant_id=tenant_id)
    if "id" in columns:
        validation.find_id_faults(pg, schema=schema, tenant_id=tenant_id)
    # Up front, not left to the write: batches cannot see a repeat across two of them.
    rejected = validation.find_duplicates(pg)
    if rejected:
        _stop_if_all_or_nothing(pg, mode, rows, rejected, errors_path, columns)
        staging.analyze_rejects(pg)
    if cancelled():
        raise ImportCancelled

    progress(ImportProgress(Phase.WRITING, rows, VALIDATED_AT))
    written = _write(
        pg,
        schema,
        tenant_id,
        columns,
        staged,
        skip_rejected=rejected > 0,
        progress=progress,
        cancelled=cancelled,
    )
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


def _copy_records(
    file: BinaryIO,
    pg: psycopg.Connection,
    errors_path: Path | None,
    *,
    tick: Callable[[int, int], None],
    every: int,
    batch_rows: int,
) -> staging.Staged:
    """Stage the file record by record, as the strict reader splits them (ImportRejected, its
    report written, when it is not well-formed CSV)."""
    records = CsvRecords(file)
    columns = records.read_header()
    try:
        return staging.copy_records(
            pg,
            columns,
            records,
            tick=lambda rows: tick(rows, records.bytes_read),
            every=every,
            batch_rows=batch_rows,
        )
    except staging.MalformedFile as exc:
        if errors_path is not None:
            errors_report.write_malformed(exc.faults, errors_path)
        faults = tuple(f"Line {f.line}: {f.reason}." for f in exc.faults[:3])
        raise ImportRejected(
            ImportOutcome(rows_read=exc.rows_read, malformed=True, first_faults=faults)
        ) from exc


def _write(
    pg: psycopg.Connection,
    schema: str,
    tenant_id: int,
    columns: tuple[str, ...],
    staged: staging.Staged,
    *,
    skip_rejected: bool,
    progress: Callable[[ImportProgress], None],
    cancelled: Callable[[], bool],
) -> Written:
    """Write the staged rows batch by batch, reporting progress after each.

    While the tenant has no task with an external id, batches are plain INSERTs (no conflict
    to look for); a concurrent writer that adds one makes the batch fail in its savepoint, and it
    and the rest go again as upserts.
    """
    upsert = has_external_ids(pg, schema=schema, tenant_id=tenant_id)
    inserted = updated = 0
    share = (WRITTEN_AT - VALIDATED_AT) / max(staged.rows, 1)

    def write(lines: tuple[int, int], *, upsert: bool) -> Written:
        return write_batch(
            pg,
            schema=schema,
            tenant_id=tenant_id,
            columns=columns,
            lines=lines,
            skip_rejected=skip_rejected,
            upsert=upsert,
        )

    for after, upto, done in staged.batches():
        if upsert:
            written = write((after, upto), upsert=True)
        else:
            try:
                with pg.transaction():
                    written = write((after, upto), upsert=False)
            except psycopg.errors.UniqueViolation:
                upsert = True
                written = write((after, upto), upsert=True)
        inserted += written.inserted
        updated += written.updated
        if cancelled():
            raise ImportCancelled
        progress(ImportProgress(Phase.WRITING, staged.rows, VALIDATED_AT + share * done))
    return Written(inserted=inserted, updated=updated)


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
        f'SELECT {staging.physical_line("line")}, "column", reason FROM import_rejects'
        " ORDER BY line, ord LIMIT %s",
        [limit],
    ).fetchall()
    return tuple(f"Line {line}, {column}: {reason}." for line, column, reason in rows)
