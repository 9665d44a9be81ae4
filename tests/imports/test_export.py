"""The CSV export: the task list's filters select the same tasks, and its file imports back
through the real pipeline (API, worker) without adding or changing anything."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes
from tests.taskflow.conftest import due_read as due_read

pytestmark = pytest.mark.worker

PROBLEM = "application/problem+json"


def export(tenant: ImportTenant, **params: str) -> bytes:
    response = tenant.client("member").get("/api/v1/tasks/export", params)
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def rows_of(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def create_task(tenant: ImportTenant, project_id: int, **fields: Any) -> dict[str, Any]:
    response = tenant.client("member").post(
        "/api/v1/tasks",
        {"project_id": project_id, "title": "A task", **fields},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return dict(response.json())


def project_id(tenant: ImportTenant) -> int:
    response = tenant.client("member").get("/api/v1/projects")
    return int(response.json()["results"][0]["id"])


def listed_ids(tenant: ImportTenant, **params: str) -> list[int]:
    response = tenant.client("member").get("/api/v1/tasks", {**params, "sort": "created_at"})
    assert response.status_code == 200, response.content
    return sorted(task["id"] for task in response.json()["results"])


def test_export_selects_what_the_task_list_selects(import_tenant: ImportTenant) -> None:
    project = project_id(import_tenant)
    member = import_tenant.fixture.user_ids["member"]
    create_task(import_tenant, project, title="Alpha one", status="done", priority=4)
    create_task(import_tenant, project, title="alpha_two", assignee_id=member, due_at="2030-01-05")
    create_task(import_tenant, project, title="Beta", status="in_progress", due_at="2030-03-01")
    create_task(import_tenant, project, title="Gamma 100%", assignee_id=member)
    every = [
        {},
        {"status": "done"},
        {"status": "done,in_progress"},
        {"assignee": str(member)},
        {"project": str(project)},
        {"due_before": "2030-02-01"},
        {"due_after": "2030-02-01"},
        {"q": "alpha"},
        {"q": "a_t"},
        {"q": "100%"},
        {"q": "alpha", "assignee": str(member)},
    ]
    for params in every:
        exported = sorted(int(row["id"]) for row in rows_of(export(import_tenant, **params)))
        assert exported == listed_ids(import_tenant, **params), params


@pytest.mark.parametrize(
    "params", [{"status": "maybe"}, {"project": "x"}, {"due_before": "soon"}, {"q": "x" * 201}]
)
def test_export_refuses_the_filters_the_list_refuses(
    import_tenant: ImportTenant, params: dict[str, str]
) -> None:
    response = import_tenant.client("member").get("/api/v1/tasks/export", params)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM


def test_an_export_imports_back_changing_nothing(
    import_tenant: ImportTenant, worker: object
) -> None:
    """Tasks made through the API have no external id: the id keeps them from being duplicated."""
    project = project_id(import_tenant)
    email = f"member-{import_tenant.fixture.tenant.slug}@example.com"
    member = import_tenant.fixture.user_ids["member"]
    create_task(import_tenant, project, title="No external id", description=" spaced ")
    create_task(
        import_tenant, project, title="Assigned", assignee_id=member, due_at="2030-01-02T09:30:00Z"
    )
    import_tenant.import_and_wait(
        csv_bytes([("EXT-1", "P1", "External", "", "done", 1, email, "")])
    )
    before = import_tenant.tasks()
    body = export(import_tenant)
    assert len(rows_of(body)) == 3
    again = import_tenant.import_and_wait(body)
    assert again["status"] == "succeeded", again
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert import_tenant.tasks() == before  # versions included: nothing was written
    edited = body.decode().replace("No external id", "Renamed").encode()
    changed = import_tenant.import_and_wait(edited)
    assert (changed["inserted"], changed["updated"], changed["unchanged"]) == (0, 1, 2)
    titles = sorted(t.title for t in import_tenant.tasks())
    assert titles == ["Assigned", "External", "Renamed"]


def test_ids_that_name_no_live_task_of_the_tenant_are_rejected(
    import_tenant: ImportTenant, worker: object
) -> None:
    project = project_id(import_tenant)
    live = create_task(import_tenant, project, title="Live")
    gone = create_task(import_tenant, project, title="Gone")
    client = import_tenant.client("admin")
    deleted = client.delete(f"/api/v1/tasks/{gone['id']}", headers={"If-Match": '"1"'})
    assert deleted.status_code == 204
    import_tenant.import_and_wait(csv_bytes([("EXT-9", "P1", "With ext", "", "", "", "", "")]))
    with_ext = next(t for t in rows_of(export(import_tenant)) if t["external_id"] == "EXT-9")
    header = ("id", "external_id", "project", "title")
    body = csv_bytes(
        [
            (str(live["id"]), "", "P1", "twice"),
            (str(live["id"]), "", "P1", "twice again"),
            (str(gone["id"]), "", "P1", "deleted"),
            ("999999999999", "", "P1", "unknown"),
            (str(2**63), "", "P1", "past bigint"),
            ("x1", "", "P1", "not a number"),
            (with_ext["id"], "OTHER", "P1", "other external id"),
        ],
        header=header,
    )
    job = import_tenant.import_and_wait(body, mode="skip_invalid")
    assert (job["inserted"], job["updated"], job["rejected"]) == (0, 0, 7)
    reasons = {(row[0], row[2]) for row in import_tenant.errors(job["id"])[1:]}
    assert reasons == {
        ("2", "is repeated in the file"),
        ("3", "is repeated in the file"),
        ("4", "belongs to a deleted task; restore it first"),
        ("5", "no task of this tenant has this id"),
        ("6", "must be the id of a task"),
        ("7", "must be the id of a task"),
        ("8", "is the id of a task with another external_id"),
    }
    assert {t.title for t in import_tenant.tasks()} == {"Live", "Gone", "With ext"}


def test_after_the_switch_imports_take_either_due_column_and_exports_name_the_clients(
    import_tenant: ImportTenant, worker: object, due_read: str
) -> None:
    """While `tasks_due_at` evolves a file may say `due_date` or `due_at`; an export writes the
    column the client's API version names, read from the column the switch names."""
    header = ("external_id", "project", "title", "due_at")
    by_time = csv_bytes([("T-1", "P1", "Timed", "2030-01-02T09:30:00+01:00"),
                         ("T-2", "P1", "Day", "2030-01-03"), ("T-3", "P1", "None", "")],
                        header=header)  # fmt: skip
    job = import_tenant.import_and_wait(by_time)
    assert (job["status"], job["inserted"]) == ("succeeded", 3), job
    by_day = csv_bytes([("D-1", "P1", "Old", "2030-01-04")], header=("external_id", "project",
                                                                     "title", "due_date"))  # fmt: skip
    assert import_tenant.import_and_wait(by_day)["inserted"] == 1
    timed = "2030-01-02T08:30:00Z" if due_read == "due_at" else "2030-01-02T00:00:00Z"
    new = {r["external_id"]: r for r in rows_of(export(import_tenant))}
    assert {k: r["due_at"] for k, r in new.items()} == {
        "T-1": timed, "T-2": "2030-01-03T00:00:00Z", "T-3": "", "D-1": "2030-01-04T00:00:00Z"
    }  # fmt: skip
    assert all("due_date" not in r for r in new.values())
    response = import_tenant.client("member").get(
        "/api/v1/tasks/export", {"due_after": "2030-01-02"}, HTTP_TASKFLOW_VERSION="2026-12-01"
    )
    assert response.status_code == 200, response.content
    old = {r["external_id"]: r for r in rows_of(b"".join(response.streaming_content))}  # type: ignore[attr-defined]
    assert {k: r["due_date"] for k, r in old.items()} == {"T-2": "2030-01-03", "D-1": "2030-01-04"}
    assert all("due_at" not in r for r in old.values())
    # The newest export imports back unchanged, times included.
    body = export(import_tenant)
    again = import_tenant.import_and_wait(body)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 4), again
    bad = csv_bytes([("B-1", "P1", "Bad", "2030-01-02T09:30:00")], header=header)
    refused = import_tenant.import_and_wait(bad)
    assert refused["status"] == "failed", refused
