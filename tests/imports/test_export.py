"""The CSV export: the task list's filters select the same tasks, and its file imports back
through the real pipeline (API, worker) without adding or changing anything."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes

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
    create_task(
        import_tenant, project, title="alpha_two", assignee_id=member, due_date="2030-01-05"
    )
    create_task(import_tenant, project, title="Beta", status="in_progress", due_date="2030-03-01")
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
    create_task(import_tenant, project, title="Assigned", assignee_id=member, due_date="2030-01-02")
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
