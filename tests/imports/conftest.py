"""Fixtures of the bulk import tests: a fresh tenant with a project, CSV builders, job polling.

Every test imports into a tenant of its own (it counts every row), through the API and a real
Celery worker on the same Redis and PostgreSQL the platform uses.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from control_plane.celery import app as celery_app
from control_plane.imports import conf
from tenants.binding import binding_for, tenant_session
from tenants.models import Isolation
from tests.taskflow.conftest import ISOLATIONS, TenantFixture, discard, provisioned_tenant

HEADER = ("external_id", "project", "title", "description", "status", "priority", "assignee", "due_date")  # fmt: skip
FINISHED = {"succeeded", "failed", "cancelled"}


def csv_bytes(rows: Sequence[Sequence[Any]], header: Sequence[str] = HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def generated_rows(
    count: int, project: str, *, prefix: str = "EXT", title: str = "Task"
) -> list[tuple[Any, ...]]:
    statuses = ("todo", "in_progress", "done", "cancelled")
    return [
        (f"{prefix}-{i:07d}", project, f"{title} {i}", f"Description of {i}", statuses[i % 4],
         i % 5, "", f"2030-{1 + i % 12:02d}-{1 + i % 28:02d}")
        for i in range(count)
    ]  # fmt: skip


def write_generated_csv(path: Path, count: int, project: str, *, prefix: str = "EXT") -> Path:
    """A large file written row by row (never held in memory)."""
    statuses = ("todo", "in_progress", "done", "cancelled")
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(count):
            writer.writerow(
                (f"{prefix}-{i:08d}", project, f"Task {i}", f"Description of task {i}",
                 statuses[i % 4], i % 5, "", f"2030-{1 + i % 12:02d}-{1 + i % 28:02d}")
            )  # fmt: skip
    return path


@dataclass
class ImportTenant:
    """A fresh tenant, its project key, and helpers to upload and watch imports."""

    fixture: TenantFixture
    project: str

    def client(self, role: str = "member") -> Client:
        return self.fixture.client(role)

    def upload(
        self,
        body: bytes,
        *,
        role: str = "member",
        key: str | None = None,
        mode: str = "",
        multipart: bool = False,
        name: str = "tasks.csv",
        request_id: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        if request_id:
            headers["X-Request-ID"] = request_id
        path = "/api/v1/imports" + (f"?mode={mode}" if mode else "")
        client = self.client(role)
        if multipart:
            upload = SimpleUploadedFile(name, body, content_type="text/csv")
            return client.post(path, {"file": upload}, headers=headers)
        return client.post(path, body, content_type="text/csv", headers=headers)  # fmt: skip

    def stored(self, job_id: int) -> Any:
        """The ImportJob row of the job the API calls `job_id` (the tenant's own number)."""
        from control_plane.imports.models import ImportJob

        return ImportJob.objects.get(tenant=self.fixture.tenant, number=job_id)

    def job(self, job_id: int, role: str = "viewer") -> dict[str, Any]:
        response = self.client(role).get(f"/api/v1/imports/{job_id}")
        assert response.status_code == 200, response.content
        return response.json()

    def wait(self, job_id: int, timeout: float = 120, until: set[str] = FINISHED) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until and (job["status"] not in FINISHED or job["finished_at"]):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"import {job_id} still {job['status']} after {timeout}s: {job}"
                )
            time.sleep(0.1)

    def import_and_wait(self, body: bytes, **options: Any) -> dict[str, Any]:
        response = self.upload(body, **options)
        assert response.status_code == 202, response.content
        return self.wait(response.json()["id"])

    def errors(self, job_id: int) -> list[list[str]]:
        response = self.client("viewer").get(f"/api/v1/imports/{job_id}/errors")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/csv")
        body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
        return list(csv.reader(io.StringIO(body.decode())))

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Rows of a query on the tenant's tables (placeholder schema `tenant`)."""
        binding = binding_for(self.fixture.tenant)
        with tenant_session(binding) as session:
            sql = statement.replace("tenant.", f"{binding.schema}.")
            return list(session.execute(sa.text(sql), params))

    def tasks(self) -> list[Any]:
        return self.sql(
            "SELECT external_id, title, description, status, priority, assignee_id, due_date,"
            " version, deleted_at FROM tenant.tasks ORDER BY id"
        )


def tenant_with_project(isolation: str, *, ids_after: int = 0) -> ImportTenant:
    """A fresh tenant with project P1; its ids start after `ids_after` (its own sequence)."""
    fixture = provisioned_tenant(isolation)
    if ids_after:
        from tenants.database_roles import owner_connection
        from tenants.ids import sequence_name

        with owner_connection() as conn:
            conn.execute(
                "SELECT setval(%s, %s)", (f"public.{sequence_name(fixture.tenant.pk)}", ids_after)
            )
    response = fixture.client("member").post(
        "/api/v1/projects", {"key": "P1", "name": "Imports"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return ImportTenant(fixture=fixture, project="P1")


@pytest.fixture(params=ISOLATIONS, ids=["schema", "rls"])
def import_tenant(request: Any, committed: None) -> Iterator[ImportTenant]:
    """A fresh tenant with project P1, in each placement (its own schema, the shared RLS one)."""
    tenant = tenant_with_project(request.param)
    yield tenant
    discard_with_uploads(tenant)


@pytest.fixture
def schema_tenant(committed: None) -> Iterator[ImportTenant]:
    """A fresh schema-mode tenant with project P1 (for the slow fault and operator tests)."""
    tenant = tenant_with_project(Isolation.SCHEMA)
    yield tenant
    discard_with_uploads(tenant)


def discard_with_uploads(tenant: ImportTenant) -> None:
    """The tenant, its rows and jobs, and the files its imports left (failed ones keep theirs)."""
    folder = conf.upload_dir() / str(tenant.fixture.tenant.pk)
    discard(tenant.fixture)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def worker(celery_worker_process: Any) -> Any:
    """The session's real worker, consuming the imports queue."""
    return celery_worker_process


@pytest.fixture
def no_import_consumers() -> Iterator[None]:
    """Every worker on this broker stops consuming the imports queue for the test."""
    others = import_consumers()
    if others:
        celery_app.control.cancel_consumer("imports", destination=others, reply=True)
    yield
    if others:
        celery_app.control.add_consumer("imports", destination=others, reply=True)


def import_consumers() -> list[str]:
    """Names of the workers on this broker that consume the imports queue."""
    queues = celery_app.control.inspect(timeout=1.0).active_queues() or {}
    return [name for name, qs in queues.items() if any(q["name"] == "imports" for q in qs)]
