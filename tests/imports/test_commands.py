"""Operators' side: `manage.py import_tasks` with a progress bar, and the admin's job list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_import_tasks_waits_with_a_progress_bar(
    schema_tenant: ImportTenant, worker: object, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.csv"
    path.write_bytes(csv_bytes(generated_rows(30, "P1")))
    slug = schema_tenant.fixture.tenant.slug
    result = manage("import_tasks", slug, str(path), "--wait", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    assert "[##############################] 100.0% succeeded" in result.stdout
    assert "succeeded: 30 rows, 30 inserted, 0 updated, 0 unchanged, 0 rejected" in result.stdout
    assert len(schema_tenant.tasks()) == 30


def test_import_tasks_exits_non_zero_with_the_reason(
    schema_tenant: ImportTenant, worker: object, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(csv_bytes([("X-1", "NOPE", "t", "", "", "", "", "")]))
    slug = schema_tenant.fixture.tenant.slug
    failed = manage("import_tasks", slug, str(path), "--wait", "--mode", "skip-invalid")
    assert failed.returncode == 0, failed.stderr  # skip-invalid: one row skipped, job succeeds
    failed = manage("import_tasks", slug, str(path), "--wait")
    assert failed.returncode != 0
    assert "failed: 1 of 1 rows were rejected. Line 2, project: no live project" in failed.stderr
    assert "error report:" in failed.stderr
    header = tmp_path / "header.csv"
    header.write_bytes(b"name,colour\n")
    refused = manage("import_tasks", slug, str(header))
    assert refused.returncode != 0
    assert (
        "unknown columns: name, colour; missing required columns: project, title" in refused.stderr
    )
    assert manage("import_tasks", "no_such_tenant", str(path)).returncode != 0


def test_admin_lists_import_jobs_of_all_tenants_read_only(
    schema_tenant: ImportTenant, worker: object, client: Client, unique: str
) -> None:
    job = schema_tenant.import_and_wait(csv_bytes(generated_rows(2, "P1")))
    operator = User.objects.create_superuser(f"op_{unique}", f"op_{unique}@example.com", "x")
    client.force_login(operator)
    listing = client.get("/admin/imports/importjob/", HTTP_HOST="localhost")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert schema_tenant.fixture.tenant.slug in page
    assert "succeeded" in page
    assert "100%" in page
    detail = client.get(
        f"/admin/imports/importjob/{schema_tenant.stored(job['id']).pk}/change/",
        HTTP_HOST="localhost",
    )
    assert detail.status_code == 200
    assert "Save" not in detail.content.decode()
