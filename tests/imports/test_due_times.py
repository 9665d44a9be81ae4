"""Imports after the `tasks.due` switch: a date written over a task due at a time of that UTC
day keeps the time, as the API does for an old client's `due_date`; so an old client's export
(a `due_date` column) imports back changing nothing, and only another day, or a date-time, moves
the time."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes
from tests.taskflow.conftest import set_due_switch

pytestmark = pytest.mark.worker

OLD_VERSION = "2026-12-01"  # the newest API version whose tasks have `due_date`


@pytest.fixture
def switched(committed: None) -> Iterator[None]:
    """The switch on `due_at`, seen by the worker too (its cache lives tenants.switches.CACHE_S)."""
    from taskflow import due
    from tenants import switches

    set_due_switch(due.DUE_AT)
    time.sleep(switches.CACHE_S)
    yield
    set_due_switch(None)
    time.sleep(switches.CACHE_S)


def create_task(tenant: ImportTenant, **fields: Any) -> dict[str, Any]:
    project = tenant.client("member").get("/api/v1/projects").json()["results"][0]["id"]
    response = tenant.client("member").post(
        "/api/v1/tasks", {"project_id": project, "title": "A task", **fields},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    return dict(response.json())


def due_times(tenant: ImportTenant) -> dict[str, str]:
    """Each task's due_at as stored, in UTC, by title."""
    rows = tenant.sql(
        "SELECT title, to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI') FROM tenant.tasks"
    )
    return {title: due for title, due in rows}


def old_export(tenant: ImportTenant) -> bytes:
    response = tenant.client("member").get(
        "/api/v1/tasks/export", headers={"TaskFlow-Version": OLD_VERSION}
    )
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_a_date_on_the_day_a_task_is_due_keeps_its_time(
    import_tenant: ImportTenant, worker: object, switched: None
) -> None:
    by_id = create_task(import_tenant, title="By id", due_at="2030-01-02T09:30:00Z")
    job = import_tenant.import_and_wait(
        csv_bytes([("E-1", "P1", "By external id", "2030-01-03T15:45:00Z")],
                  header=("external_id", "project", "title", "due_at"))
    )  # fmt: skip
    assert job["inserted"] == 1, job
    timed = {"By id": "2030-01-02T09:30", "By external id": "2030-01-03T15:45"}
    assert due_times(import_tenant) == timed

    # An old client's export has the tasks' days only; imported back, it changes nothing.
    body = old_export(import_tenant)
    assert {r["title"]: r["due_date"] for r in csv.DictReader(io.StringIO(body.decode()))} == {
        "By id": "2030-01-02", "By external id": "2030-01-03"
    }  # fmt: skip
    again = import_tenant.import_and_wait(body)
    assert (again["status"], again["updated"], again["unchanged"]) == ("succeeded", 0, 2), again[
        "error"
    ]
    assert due_times(import_tenant) == timed

    # The same days as dates in `due_at`, by id and by external id: the times stay.
    same_day = csv_bytes(
        [(str(by_id["id"]), "", "P1", "By id", "2030-01-02"),
         ("", "E-1", "P1", "By external id", "2030-01-03")],
        header=("id", "external_id", "project", "title", "due_at"),
    )  # fmt: skip
    kept = import_tenant.import_and_wait(same_day)
    assert (kept["updated"], kept["unchanged"]) == (0, 2), kept
    assert due_times(import_tenant) == timed

    # Another day is that day at 00:00 UTC; a date-time sets its time, midnight included.
    moved = csv_bytes(
        [(str(by_id["id"]), "", "P1", "By id", "2030-01-05", ""),
         ("", "E-1", "P1", "By external id", "", "2030-01-03T00:00:00Z")],
        header=("id", "external_id", "project", "title", "due_date", "due_at"),
    )  # fmt: skip
    job = import_tenant.import_and_wait(moved)
    assert (job["updated"], job["unchanged"]) == (2, 0), job
    assert due_times(import_tenant) == {
        "By id": "2030-01-05T00:00", "By external id": "2030-01-03T00:00"
    }  # fmt: skip
