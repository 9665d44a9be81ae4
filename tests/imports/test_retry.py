"""An operator's retry of a stuck import (POST /api/v1/imports/{id}/retry): sent again when it has
no message waiting and no live worker, refused otherwise; workers an earlier test left running stop
consuming imports meanwhile, so the job stays queued and nothing it would write is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from control_plane.celery import app as celery_app
from control_plane.imports.services import JOBS
from control_plane.worker import leases, recovery
from tests.conftest import nobody_else_consumes
from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows


@pytest.fixture
def no_consumers() -> Iterator[None]:
    with nobody_else_consumes("imports"):
        yield
        celery_app.control.purge()


def retry(tenant: ImportTenant, job_id: int) -> Any:
    return tenant.client("member").post(f"/api/v1/imports/{job_id}/retry")


def test_a_stuck_import_is_sent_again_and_a_waiting_one_is_refused(
    import_tenant: ImportTenant, no_consumers: None
) -> None:
    created = import_tenant.upload(csv_bytes(generated_rows(3, "P1")))
    assert created.status_code == 202, created.content
    job_id = created.json()["id"]

    waiting = retry(import_tenant, job_id)
    assert waiting.status_code == 409
    assert waiting["Content-Type"] == "application/problem+json"
    assert "has a message waiting for a worker" in waiting.json()["detail"]

    # The broker lost the message (and its mark with it).
    stored = import_tenant.stored(job_id).pk  # recovery knows the job by its global key
    leases.client(recovery._broker_url()).delete(f"recovery:sent:{JOBS.name}:{stored}")
    sent = retry(import_tenant, job_id)
    assert sent.status_code == 202, sent.content
    assert sent.json()["status"] == "queued"
    assert retry(import_tenant, job_id).status_code == 409  # its message waits again


def test_a_finished_import_is_not_retried(import_tenant: ImportTenant, no_consumers: None) -> None:
    created = import_tenant.upload(csv_bytes(generated_rows(3, "P1")))
    job_id = created.json()["id"]
    assert (
        import_tenant.client("member").post(f"/api/v1/imports/{job_id}/cancel").status_code == 202
    )
    refused = retry(import_tenant, job_id)
    assert refused.status_code == 409
    assert "it is not retried" in refused.json()["detail"]
