"""Uploads as an attacker would send them: each a 4xx problem or a stored job, never a 500."""

from __future__ import annotations

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

PROBLEM = "application/problem+json"


def test_multipart_without_a_boundary_is_a_400_problem_naming_the_fault(
    import_tenant: ImportTenant,
) -> None:
    response = import_tenant.client().post(
        "/api/v1/imports", b"--x\r\n\r\n", content_type="multipart/form-data"
    )
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
    assert "boundary" in response.json()["detail"]


def test_a_file_name_with_control_characters_is_stored_printable(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = csv_bytes(generated_rows(1, "P1"))
    response = import_tenant.upload(body, multipart=True, name="ta\x00sks\x07.csv")
    assert response.status_code == 202, response.content
    assert response.json()["file"]["name"] == "tasks.csv"
    assert import_tenant.wait(response.json()["id"])["status"] == "succeeded"


def test_an_idempotency_key_with_a_nul_is_a_400_problem(import_tenant: ImportTenant) -> None:
    response = import_tenant.upload(csv_bytes(generated_rows(1, "P1")), key="k\x00")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
