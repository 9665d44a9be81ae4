"""Running an import job (the worker's side): the TaskFlow pipeline in one tenant transaction.

`run_import_job` runs the pipeline on a session bound to the job's tenant and commits the
tenant's rows together with the job's final status, in one transaction: a worker killed or a
database connection lost before that commit leaves nothing written and the job retried from
scratch; after it, the job is done and a redelivered message is a no-op. It never deletes or
changes tenant rows outside that transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from django.db import OperationalError, connection
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from control_plane.imports import conf
from control_plane.imports.models import ACTIVE_STATUSES, ImportJob, ImportStatus
from control_plane.imports.services import members_of
from control_plane.observability import metrics
from taskflow.imports import entry as pipeline
from tenants.binding import TenantBusy, binding_for, hold_write_lock, tenant_session

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x494D5054  # "IMPT": advisory locks of import jobs, keyed by job id
PROGRESS_INTERVAL = 0.5  # seconds between two writes of progress to the job row
RETRY_BACKOFF = (2, 10, 30)
RECONNECT_ATTEMPTS = 10  # seconds apart: long enough for a PostgreSQL restart


class ImportInterrupted(Exception):
    """The attempt's transaction was lost (database gone, tenant being moved); the worker retries
    the job after `countdown`."""

    def __init__(self, reason: str, countdown: float) -> None:
        super().__init__(reason)
        self.countdown = countdown


class _NotRunning(Exception):
    """Another delivery of the job's message got to it first (it finished, or was re-queued)."""


def run_import_job(job_id: int, *, worker: str = "") -> ImportJob:
    """Run one attempt of the job; raises ImportInterrupted when it should be retried."""
    job = ImportJob.objects.select_related("tenant").get(pk=job_id)
    if job.status == ImportStatus.CANCELLED and job.finished_at is None:
        _finish(job, ImportStatus.CANCELLED)  # cancelled while queued: stamp it, drop the file
    if job.is_finished:
        return job
    if job.attempts >= conf.max_attempts():
        _finish(job, ImportStatus.FAILED, error=_gave_up(job))
        return job
    started = ImportJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(
        status=ImportStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), timezone.now()),
        worker=worker[:200],
        phase="",
        progress=0.0,
        error="",
    )
    job.refresh_from_db()
    if not started:
        return job
    try:
        _attempt(job)
    except pipeline.ImportRejected as exc:
        _finish(job, ImportStatus.FAILED, outcome=exc.outcome, error=exc.outcome.summary)
    except pipeline.ImportCancelled:
        _finish(job, ImportStatus.CANCELLED)
    except _NotRunning:
        pass
    except (psycopg.OperationalError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        _interrupted(job, exc, "lost its database connection")
    except TenantBusy as exc:
        _interrupted(job, exc, "found the tenant being moved")
    except Exception as exc:
        logger.exception("import %s failed", job.pk)
        _finish(job, ImportStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
    job.refresh_from_db()
    if job.is_finished:
        metrics.import_finished(status=job.status, rows=job.rows_read, rejected=job.rejected)
    return job


def _attempt(job: ImportJob) -> None:
    """One attempt, in one tenant transaction that also marks the job succeeded."""
    # Jobs recorded before request ids were kept (or made outside a request) name themselves.
    request_id = job.request_id or f"import-{job.number}"
    binding = binding_for(job.tenant, actor_id=job.created_by_id, request_id=request_id)
    recorder = ProgressRecorder(job.pk)
    with recorder.in_phase_gauge(), tenant_session(binding) as session:
        # A redelivered message while this job still runs elsewhere waits here, then finds it
        # finished (or its runner dead, and goes on).
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_NAMESPACE, job.pk % 2**31)))
        # The tenant's write lock (shared), for the whole transaction: a move between placements
        # waits for the import and never copies the tenant while its rows are half written.
        hold_write_lock(session)
        status = _status(job.pk)
        if status == ImportStatus.CANCELLED:
            raise pipeline.ImportCancelled
        if status != ImportStatus.RUNNING:
            raise _NotRunning
        outcome = pipeline.run_import(
            session=session,
            schema=binding.schema,
            tenant_id=binding.tenant_id,
            source=Path(job.file_path),
            mode=pipeline.ImportMode(job.mode),
            members=members_of(job.tenant_id),
            errors_path=Path(job.errors_path),
            progress=recorder,
            cancelled=recorder.cancelled,
            progress_every=conf.progress_every(),
            batch_rows=conf.write_batch_rows(),
        )
        finished = session.execute(
            sa.update(JOB_TABLE)
            .where(JOB_TABLE.c.id == job.pk, JOB_TABLE.c.status == ImportStatus.RUNNING)
            .values(
                status=ImportStatus.SUCCEEDED,
                phase="",
                progress=100.0,
                error=outcome.summary if outcome.rejected else "",
                finished_at=sa.func.clock_timestamp(),
                **_counts(outcome),
                rows_per_second=sa.literal(outcome.rows_read)
                / sa.func.greatest(
                    sa.extract("epoch", sa.func.clock_timestamp() - JOB_TABLE.c.started_at), 0.001
                ),
            )
        )
        if finished.rowcount != 1:  # type: ignore[attr-defined]
            raise pipeline.ImportCancelled  # cancelled meanwhile: roll the rows back
    Path(job.file_path).unlink(missing_ok=True)


# The job row as the tenant transaction updates it (SQLAlchemy Core: the job's final status
# must commit in the same transaction as the tenant's rows).
JOB_TABLE = sa.table(
    ImportJob._meta.db_table,
    *(sa.column(name) for name in (
        "id", "status", "phase", "progress", "error", "finished_at", "started_at",
        "rows_read", "inserted", "updated", "unchanged", "rejected", "rows_per_second",
    )),
    schema="public",
)  # fmt: skip


def _status(job_id: int) -> str:
    return str(ImportJob.objects.filter(pk=job_id).values_list("status", flat=True).get())


def _counts(outcome: pipeline.ImportOutcome) -> dict[str, int]:
    return {
        "rows_read": outcome.rows_read,
        "inserted": outcome.inserted,
        "updated": outcome.updated,
        "unchanged": outcome.unchanged,
        "rejected": outcome.rejected,
    }


def _gave_up(job: ImportJob) -> str:
    previous = f" Last error: {job.error}" if job.error else ""
    return (
        f"Gave up after {job.attempts} attempts (the worker or its database connection was lost"
        f" each time); nothing was written.{previous}"
    )[:2000]


def _interrupted(job: ImportJob, exc: Exception, what: str) -> None:
    """The attempt's transaction is gone (the database went away, or the tenant is being moved
    and the write lock timed out): nothing was written. Retry later, while attempts remain."""
    reason = f"Attempt {job.attempts} {what} ({type(exc).__name__}: {exc})"
    reason = reason.strip()[:1500]
    if job.attempts >= conf.max_attempts():
        _finish(job, ImportStatus.FAILED, error=f"{reason}; gave up, nothing was written.")
        return
    countdown = RETRY_BACKOFF[min(job.attempts, len(RETRY_BACKOFF)) - 1]
    _record(
        job.pk,
        status=ImportStatus.QUEUED,
        phase="",
        error=f"{reason}; nothing was written, retrying in {countdown}s.",
    )
    raise ImportInterrupted(reason, countdown)


def _finish(
    job: ImportJob,
    status: str,
    *,
    outcome: pipeline.ImportOutcome | None = None,
    error: str | None = None,
) -> None:
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "phase": ""}
    if outcome is not None:
        fields.update(_counts(outcome))
    if error is not None:
        fields["error"] = error
    if status == ImportStatus.CANCELLED:
        # The API set the status; stamp the end of a job still cancelled (a concurrent run that
        # found the job succeeded must not touch it).
        fields.pop("status")
        if _record(job.pk, only_status=ImportStatus.CANCELLED, **fields):
            Path(job.file_path).unlink(missing_ok=True)
        return
    _record(job.pk, only_status=ACTIVE_STATUSES, **fields)


def _record(
    job_id: int, *, only_status: str | tuple[str, ...] = ACTIVE_STATUSES, **fields: Any
) -> int:
    """Update the job row while it has one of `only_status` (how many rows did), reconnecting
    if the database went away (a restart, say)."""
    statuses = (only_status,) if isinstance(only_status, str) else only_status
    rows = ImportJob.objects.filter(pk=job_id, status__in=statuses)
    for _ in range(RECONNECT_ATTEMPTS - 1):
        try:
            return rows.update(**fields)
        except OperationalError:
            connection.close()
            time.sleep(1)
    return rows.update(**fields)


class ProgressRecorder:
    """Writes the pipeline's progress to the job row (when the phase changes, when the bar moved
    a whole point, else at most every PROGRESS_INTERVAL: at most about a hundred writes beyond
    the interval's per job) and answers its cancel checks from the same row."""

    def __init__(self, job_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self.clock = clock
        self.started = clock()
        self.last_write = float("-inf")
        self.last_check = float("-inf")
        self.last_phase = ""
        self.last_point = -1
        self.is_cancelled = False

    def __call__(self, progress: pipeline.ImportProgress) -> None:
        now = self.clock()
        point = int(progress.percent)
        if (
            progress.phase == self.last_phase
            and point <= self.last_point
            and now - self.last_write < PROGRESS_INTERVAL
        ):
            return
        if progress.phase != self.last_phase:
            metrics.import_phase_changed(self.last_phase, progress.phase)
        self.last_write, self.last_phase, self.last_point = now, progress.phase, point
        elapsed = max(now - self.started, 1e-3)
        ImportJob.objects.filter(pk=self.job_id, status=ImportStatus.RUNNING).update(
            phase=progress.phase,
            rows_read=progress.rows_read,
            progress=round(progress.percent, 2),
            rows_per_second=round(progress.rows_read / elapsed, 1),
        )

    @contextmanager
    def in_phase_gauge(self) -> Iterator[None]:
        """The running-imports-by-phase gauge counts this attempt until it ends, however."""
        try:
            yield
        finally:
            metrics.import_phase_changed(self.last_phase, "")

    def cancelled(self) -> bool:
        now = self.clock()
        if not self.is_cancelled and now - self.last_check >= PROGRESS_INTERVAL:
            self.last_check = now
            self.is_cancelled = _status(self.job_id) == ImportStatus.CANCELLED
        return self.is_cancelled
