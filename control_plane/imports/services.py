"""Import jobs: request one from a stored upload (idempotent by its key), find it, cancel it.

The worker's side, running a job, is control_plane.imports.running.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import Max

from control_plane.celery import app as celery_app
from control_plane.celery import (
    broker_unavailable,
    broker_unreachable_errors,
    refuse_while_broker_down,
)
from control_plane.identity.models import Membership
from control_plane.imports.models import ACTIVE_STATUSES, ImportJob, ImportMode, ImportStatus
from control_plane.imports.uploads import StoredUpload
from control_plane.worker import recovery
from tenants.models import Tenant
from tenants.problems import NotFound, Problem

RUN_TASK = "control_plane.imports.tasks.run_import"
NUMBERING_LOCK_NAMESPACE = 0x6E756D  # "num": the advisory-lock class of tenants' job numbering


class ImportConflict(Problem):
    status = 409
    title = "Conflict"


class FilesRemoved(Problem):
    """The job's files were deleted past IMPORT_FILE_RETENTION_DAYS (control_plane.imports.retention)."""

    status = 410
    title = "Gone"


@dataclass(frozen=True)
class ImportRequested:
    job: ImportJob
    created: bool


# --- Requesting and cancelling -----------------------------------------------------------------


def request_import(
    *,
    tenant: Tenant,
    upload: StoredUpload,
    mode: str = ImportMode.ALL_OR_NOTHING,
    created_by_id: int | None = None,
    idempotency_key: str | None = None,
    request_id: str = "",
) -> ImportRequested:
    """Record a job for a stored upload and queue it; a repeated key returns the first job.

    A key reused for a different file is a 409: replaying it must not import something else.
    An unreachable broker is 503 with nothing recorded: the job row is withdrawn and the upload
    discarded when its message cannot be sent.
    """
    if idempotency_key:
        existing = ImportJob.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, upload)
    try:
        refuse_while_broker_down()
    except Exception:
        upload.discard()
        raise
    try:
        with transaction.atomic():
            job = ImportJob.objects.create(
                tenant=tenant,
                number=_next_number(tenant.pk),
                created_by_id=created_by_id,
                idempotency_key=idempotency_key or None,
                mode=mode,
                file_name=upload.name,
                file_path=str(upload.path),
                file_size=upload.size,
                file_sha256=upload.sha256,
                columns=list(upload.columns),
                errors_path=str(upload.path.with_suffix(".errors.csv")),
                request_id=request_id,
            )
            transaction.on_commit(lambda: _enqueue_or_withdraw(job, upload))
    except IntegrityError:
        existing = ImportJob.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is None:
            upload.discard()
            raise
        return _replay(existing, upload)
    return ImportRequested(job=job, created=True)


def _next_number(tenant_id: int) -> int:
    """The tenant's next job number, inside the caller's transaction: a transaction-level lock
    on the tenant's numbering makes concurrent requests take turns (jobs are rare, the wait is
    one short INSERT), and its highest number is read under it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [NUMBERING_LOCK_NAMESPACE, tenant_id % 2**31]
        )
    highest = ImportJob.objects.filter(tenant_id=tenant_id).aggregate(top=Max("number"))["top"]
    return int(highest or 0) + 1


def replay_before_upload(
    *, tenant: Tenant, idempotency_key: str, size: int | None, sha256: str | None
) -> ImportJob | None:
    """The job a repeated key already made, told before the request's body is read.

    For a text/csv body (the file itself) the digest the client sent (Content-Digest) decides,
    else its declared size: a different file of the same size under a reused key replays the
    first job unless the client sends the digest. None when neither is known (a multipart form):
    the body is read and compared as on first use.
    """
    existing = ImportJob.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if existing is None:
        return None
    same = existing.file_sha256 == sha256 if sha256 is not None else None
    if same is None and size is not None:
        same = existing.file_size == size
    if same is False:
        raise ImportConflict("This Idempotency-Key was used for an import of a different file.")
    return existing if same else None


def _replay(existing: ImportJob, upload: StoredUpload) -> ImportRequested:
    upload.discard()
    if existing.file_sha256 != upload.sha256:
        raise ImportConflict("This Idempotency-Key was used for an import of a different file.")
    return ImportRequested(job=existing, created=False)


def _send(job_id: int) -> None:
    celery_app.send_task(RUN_TASK, args=[job_id])


def _unfinished() -> list[int]:
    return list(ImportJob.objects.filter(status__in=ACTIVE_STATUSES).values_list("pk", flat=True))


# Beat sends a queued or running job again when its message is lost or its worker died.
JOBS = recovery.register("import", unfinished=_unfinished, resend=_send)


def enqueue(job_id: int) -> None:
    recovery.send(JOBS, job_id)


def retry_import(job: ImportJob) -> ImportJob:
    """Send a stuck queued or running job again now (beat would within a minute); refused for a
    finished job, one a live worker runs and one whose message waits for a worker."""
    if job.is_finished:
        raise ImportConflict(f"Import {job.pk} has already {job.status}; it is not retried.")
    recovery.operator_retry(
        JOBS, job.pk, refused=lambda why: ImportConflict(f"Import {job.pk} is not stuck: {why}.")
    )
    job.refresh_from_db()
    return job


def _enqueue_or_withdraw(job: ImportJob, upload: StoredUpload) -> None:
    try:
        enqueue(job.pk)
    except broker_unreachable_errors() as exc:
        ImportJob.objects.filter(pk=job.pk).delete()
        upload.discard()
        raise broker_unavailable() from exc


def job_of(tenant_id: int, job_id: int) -> ImportJob:
    """The tenant's job by the id its API shows: the tenant's own number."""
    job = ImportJob.objects.filter(tenant_id=tenant_id, number=job_id).first()
    if job is None:
        raise NotFound(f"No import {job_id}.")
    return job


def cancel_import(job: ImportJob) -> ImportJob:
    """Cancel a queued or running job; its worker rolls back at its next check.

    A job that already committed (the worker holds its row while committing) cannot be cancelled.
    """
    changed = ImportJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(
        status=ImportStatus.CANCELLED, error="Cancelled on request."
    )
    job.refresh_from_db()
    if not changed and job.status != ImportStatus.CANCELLED:
        raise ImportConflict(
            f"Import {job.number} has already {job.status}; it cannot be cancelled."
        )
    return job


def members_of(tenant_id: int) -> Iterator[tuple[str, int]]:
    """(email, user id) of the tenant's members: how an assignee email becomes a user."""
    rows = Membership.objects.filter(tenant_id=tenant_id).values_list("user__email", "user_id")
    yield from rows.iterator(chunk_size=2000)
