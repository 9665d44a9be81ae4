"""The tenant API of bulk imports: upload, watch, read the error report, cancel; export tasks.

Thin views with TaskFlow's tenant roles (taskflow.permissions) and problem+json errors:
members import and export, viewers read jobs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.http.openapi import (
    CONTROL_CHARACTER,
    IDEMPOTENCY,
    IMPORT_JOB_LIST,
    IMPORT_UPLOAD,
    ImportJobShape,
)
from control_plane.imports import services
from control_plane.imports.models import ImportJob, ImportMode
from control_plane.imports.uploads import CsvBodyParser, MultipartCsvParser, uploaded
from taskflow.api_versions import CATALOG, task_due_field
from taskflow.errors import InvalidInput
from taskflow.filters import task_filters
from taskflow.imports.entry import ERRORS_HEADER, export_tasks
from taskflow.openapi import (
    LOCATION_HEADER,
    TASK_FILTER_QUERY,
    DeclaredQuery,
    QueryParam,
    problems,
)
from taskflow.permissions import TenantRole
from tenants.binding import request_binding, request_id_of, tenant_of, tenant_session
from tenants.identity import Role, principal_of

IDEMPOTENCY_HEADER = "Idempotency-Key"
SHA256_DIGEST = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):")
MAX_KEY_LENGTH = 200
RECENT_JOBS = 50
MODES = {
    "all_or_nothing": ImportMode.ALL_OR_NOTHING,
    "all-or-nothing": ImportMode.ALL_OR_NOTHING,
    "skip_invalid": ImportMode.SKIP_INVALID,
    "skip-invalid": ImportMode.SKIP_INVALID,
}


def job_repr(job: ImportJob) -> dict[str, Any]:
    duration = job.duration
    base = f"/api/v1/imports/{job.number}"
    return {
        "id": job.number,  # numbered per tenant (ImportJob.number), not the global key
        "status": job.status,
        "phase": job.phase or None,
        "mode": job.mode,
        "file": {"name": job.file_name, "size": job.file_size, "sha256": job.file_sha256},
        "columns": job.columns,
        "rows_read": job.rows_read,
        "inserted": job.inserted,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "rejected": job.rejected,
        "progress": job.progress,
        "rows_per_second": job.rows_per_second,
        "error": job.error or None,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "files_removed_at": job.files_removed_at,
        "duration_seconds": duration.total_seconds() if duration is not None else None,
        "links": {"self": base, "errors": f"{base}/errors", "cancel": f"{base}/cancel"},
    }


IMPORT_MODE = QueryParam(
    "mode",
    "What a bad row does: fail the whole import, or be skipped and reported.",
    enum=("all_or_nothing", "skip_invalid"),
    aliases=("all-or-nothing", "skip-invalid"),
    default="all_or_nothing",
)
# An empty body is no CSV (422, a header row is required): at least one byte, a file for clients.
CSV_BODY = {"type": "string", "format": "binary", "minLength": 1}
CSV = OpenApiResponse(OpenApiTypes.BINARY, description="CSV (RFC 4180), with a header line.")
REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    OpenApiParameter.HEADER,
    response=[202],
    description="Present when the key named an existing job.",
)


class ImportView(DeclaredQuery, APIView):
    """An import resource of the caller's tenant, by tenant role."""

    permission_classes = (IsAuthenticated, TenantRole)

    @property
    def tenant_id(self) -> int:
        return principal_of(self.request).tenant_id


def _mode(request: Request) -> str:
    value = request.query_params.get("mode") or request.data.get("mode") or "all_or_nothing"
    if value not in MODES:
        raise InvalidInput("mode", "Mode must be all_or_nothing or skip_invalid.")
    return MODES[value]


def _idempotency_key(request: Request) -> str | None:
    raw = request.headers.get(IDEMPOTENCY_HEADER) or ""
    if CONTROL_CHARACTER.search(raw):  # a NUL could never reach the job's column
        raise InvalidInput(IDEMPOTENCY_HEADER, "No control characters.")
    key = raw.strip()
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(IDEMPOTENCY_HEADER, f"At most {MAX_KEY_LENGTH} characters.")
    return key or None


def _declared_csv_size(request: Request) -> int | None:
    """A text/csv body's Content-Length: the file's size. None for a form or no length."""
    if not (request.content_type or "").startswith("text/csv"):
        return None
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _declared_sha256(request: Request) -> str | None:
    """A text/csv body's SHA-256 from `Content-Digest: sha-256=:<base64>:` (RFC 9530), if sent
    (a form's digest is not its file's)."""
    if not (request.content_type or "").startswith("text/csv"):
        return None
    match = SHA256_DIGEST.search(request.headers.get("Content-Digest", ""))
    if match is None:
        return None
    try:
        return base64.b64decode(match.group(1), validate=True).hex()
    except binascii.Error:
        return None


class ImportCollection(ImportView):
    parser_classes = (CsvBodyParser, MultipartCsvParser)
    rate_limit_class = {"POST": "imports"}  # control_plane.ratelimits.policies
    request_body_required = frozenset({"post"})  # the CSV (control_plane.http.openapi)
    query_parameters = {"post": (IMPORT_MODE,)}

    @extend_schema(
        operation_id="listImports",
        summary="The tenant's recent import jobs, newest first",
        responses={200: IMPORT_JOB_LIST},
    )
    def get(self, request: Request) -> Response:
        jobs = ImportJob.objects.filter(tenant_id=self.tenant_id)[:RECENT_JOBS]
        return Response({"results": [job_repr(job) for job in jobs]})

    @extend_schema(
        operation_id="createImport",
        summary="Upload a CSV of tasks; a worker imports it",
        request={"text/csv": CSV_BODY, "multipart/form-data": IMPORT_UPLOAD},
        parameters=[IDEMPOTENCY, REPLAYED, LOCATION_HEADER],
        responses={202: ImportJobShape, **problems(409, 413, 415, 422)},
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        if key:  # a replay is answered before the body (the whole file) is read
            replayed = services.replay_before_upload(
                tenant=tenant_of(request),
                idempotency_key=key,
                size=_declared_csv_size(request),
                sha256=_declared_sha256(request),
            )
            if replayed is not None:
                return Response(
                    job_repr(replayed),
                    status=202,
                    headers={
                        "Location": f"/api/v1/imports/{replayed.number}",
                        "Idempotent-Replayed": "true",
                    },
                )
        upload = uploaded(request.FILES, request.content_type)
        try:
            mode = _mode(request)
        except InvalidInput:
            upload.discard()
            raise
        requested = services.request_import(
            tenant=tenant_of(request),
            upload=upload,
            mode=mode,
            created_by_id=principal_of(request).user_id,
            idempotency_key=key,
            request_id=request_id_of(request),
        )
        headers = {"Location": f"/api/v1/imports/{requested.job.number}"}
        if not requested.created:
            headers["Idempotent-Replayed"] = "true"
        return Response(job_repr(requested.job), status=202, headers=headers)


class ImportDetail(ImportView):
    @extend_schema(
        operation_id="getImport", summary="An import job", responses={200: ImportJobShape}
    )
    def get(self, request: Request, job_id: int) -> Response:
        return Response(job_repr(services.job_of(self.tenant_id, job_id)))


class ImportErrors(ImportView):
    @extend_schema(
        operation_id="getImportErrors",
        responses={(200, "text/csv"): CSV, **problems(410)},
    )
    def get(self, request: Request, job_id: int) -> HttpResponseBase:
        """The rejected rows as CSV (line, column, reason); only the header while there are none."""
        job = services.job_of(self.tenant_id, job_id)
        if job.files_removed_at is not None:
            raise services.FilesRemoved(
                f"Import {job.number}'s error report was deleted at"
                f" {job.files_removed_at.isoformat()}, past the retention."
            )
        path = Path(job.errors_path) if job.errors_path else None
        disposition = f'attachment; filename="import-{job.number}-errors.csv"'
        response: HttpResponseBase
        if path is None or not path.exists():
            response = HttpResponse(",".join(ERRORS_HEADER) + "\r\n", content_type="text/csv")
        else:
            response = FileResponse(path.open("rb"), content_type="text/csv")
        response["Content-Disposition"] = disposition
        return response


class ImportCancel(ImportView):
    @extend_schema(
        operation_id="cancelImport",
        summary="Cancel an import job that has not finished",
        request=None,
        responses={202: ImportJobShape, **problems(409)},
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = services.cancel_import(services.job_of(self.tenant_id, job_id))
        return Response(job_repr(job), status=202)


class ImportRetry(ImportView):
    @extend_schema(
        operation_id="retryImport",
        summary="Send a stuck import job again (one no live worker runs)",
        request=None,
        responses={202: ImportJobShape, **problems(409, 503)},
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = services.retry_import(services.job_of(self.tenant_id, job_id))
        return Response(job_repr(job), status=202)


class TaskExport(ImportView):
    rate_limit_class = "exports"  # control_plane.ratelimits.policies
    required_roles = {"GET": Role.MEMBER, "HEAD": Role.MEMBER}
    query_parameters = {"get": TASK_FILTER_QUERY}  # the task list's filters (taskflow.filters)

    @extend_schema(operation_id="exportTasks", responses={(200, "text/csv"): CSV})
    def get(self, request: Request) -> StreamingHttpResponse:
        """The tenant's live tasks as CSV in the import's columns, streamed from COPY; the task
        list's filters select the same tasks here."""
        filters = task_filters(request.query_params)
        binding = request_binding(request)
        # The due column the client's API version names (due_date before 2026-12-06).
        due_column = task_due_field(getattr(request, "api_version", None) or CATALOG.latest)

        def chunks() -> Iterator[bytes]:
            with tenant_session(binding) as session:
                yield from export_tasks(
                    session=session,
                    schema=binding.schema,
                    tenant_id=binding.tenant_id,
                    members=services.members_of(binding.tenant_id),
                    filters=filters,
                    due_column=due_column,
                )

        response = StreamingHttpResponse(chunks(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="tasks.csv"'
        return response
