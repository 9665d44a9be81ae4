"""Bulk imports through the API and a real worker: upload, idempotency, limits, header, roles,
every validation reason with its line, both modes, upserts, history, export and cancel."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from control_plane.imports import conf
from tests.imports.conftest import HEADER, ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

PROBLEM = "application/problem+json"


def uploads_on_disk() -> set[Path]:
    """Uploads (and partial uploads) in the upload folder, of every tenant."""
    folder = conf.upload_dir()
    return (
        {p for p in folder.glob("*/*") if p.suffix in {".csv", ".part"}}
        if folder.exists()
        else set()
    )


@pytest.fixture
def new_uploads() -> Any:
    """The uploads a test leaves on disk (tenant ids repeat across test databases)."""
    before = uploads_on_disk()
    return lambda: {p for p in uploads_on_disk() - before if not p.name.endswith(".errors.csv")}


# --- Happy path ---------------------------------------------------------------------------------


def test_multipart_upload_is_imported_by_a_worker_with_counts_and_history(
    import_tenant: ImportTenant, worker: object, new_uploads: Any
) -> None:
    rows = generated_rows(25, "P1")
    response = import_tenant.upload(
        csv_bytes(rows), multipart=True, name="mine.csv", request_id="upload-req.1"
    )
    assert response.status_code == 202, response.content
    assert response["X-Request-ID"] == "upload-req.1"
    created = response.json()
    assert created["status"] == "queued"
    assert created["file"]["name"] == "mine.csv"
    assert response["Location"] == f"/api/v1/imports/{created['id']}"

    job = import_tenant.wait(created["id"])
    assert job["status"] == "succeeded", job
    assert (job["rows_read"], job["inserted"], job["updated"], job["rejected"]) == (25, 25, 0, 0)
    assert job["progress"] == 100.0
    assert job["rows_per_second"] > 0
    assert job["duration_seconds"] is not None
    assert job["attempts"] == 1
    tasks = import_tenant.tasks()
    assert [t.external_id for t in tasks] == [r[0] for r in rows]
    assert (tasks[3].status, tasks[3].priority, str(tasks[3].due_date)) == (
        "cancelled",
        3,
        "2030-04-04",
    )
    history = import_tenant.sql(
        "SELECT operation, actor_id, request_id FROM tenant.tasks_history ORDER BY id"
    )
    member = import_tenant.fixture.user_ids["member"]
    # The uploading request's id, carried by the job to the worker's app.request_id.
    assert {tuple(h) for h in history} == {("insert", member, "upload-req.1")}
    assert len(history) == 25
    assert new_uploads() == set()  # removed once imported


def test_imported_tasks_take_consecutive_ids_of_the_tenants_own(
    import_tenant: ImportTenant, worker: object, committed: None
) -> None:
    """A bulk insert draws from the tenant's own sequence (migration 0006): the new tasks take
    the ids right after the tenant's last one (its project and that project's history entry),
    whatever other tenants wrote meanwhile, and their history entries follow them."""
    from tests.taskflow.conftest import discard, provisioned_tenant

    other = provisioned_tenant(import_tenant.fixture.tenant.isolation)
    try:
        project = other.api().post("/api/v1/projects", {"key": "O1", "name": "Other"}).json()
        for i in range(20):
            other.api().post("/api/v1/tasks", {"project_id": project["id"], "title": f"o{i}"})
        job = import_tenant.import_and_wait(csv_bytes(generated_rows(25, "P1")))
        assert job["status"] == "succeeded", job
    finally:
        discard(other)
    ids = [row.id for row in import_tenant.sql("SELECT id FROM tenant.tasks ORDER BY id")]
    assert ids == list(range(3, 28))  # 1: project P1, 2: its history entry
    history = import_tenant.sql("SELECT id FROM tenant.tasks_history ORDER BY id")
    assert [row.id for row in history] == list(range(28, 53))


def test_import_jobs_are_numbered_per_tenant(
    import_tenant: ImportTenant, worker: object, committed: None
) -> None:
    """A job's id in the API is the tenant's own number: other tenants' imports in between do
    not move it, and the id leads to the job and its Location; its history keeps the uploading
    request's id."""
    from tests.imports.conftest import discard_with_uploads, tenant_with_project

    first = import_tenant.import_and_wait(csv_bytes(generated_rows(1, "P1", prefix="A")))
    first_pk = import_tenant.stored(1).pk
    other = tenant_with_project(import_tenant.fixture.tenant.isolation)
    try:
        others = [
            other.import_and_wait(csv_bytes(generated_rows(1, "P1", prefix=f"O{i}")))["id"]
            for i in range(3)
        ]
        assert others == [1, 2, 3]
    finally:
        discard_with_uploads(other)
    response = import_tenant.upload(csv_bytes(generated_rows(1, "P1", prefix="B")))
    assert response.status_code == 202, response.content
    second = import_tenant.wait(response.json()["id"])
    assert (first["id"], second["id"]) == (1, 2)
    assert response["Location"] == "/api/v1/imports/2"
    assert (
        import_tenant.stored(2).pk >= first_pk + 4
    )  # the global key counted the other tenant's jobs; the id did not
    history = import_tenant.sql("SELECT DISTINCT request_id FROM tenant.tasks_history")
    uploads = {import_tenant.stored(1).request_id, import_tenant.stored(2).request_id}
    assert {row.request_id for row in history} == uploads
    assert "" not in uploads


def test_text_csv_body_and_idempotency_key_give_the_same_job(
    import_tenant: ImportTenant, worker: object, new_uploads: Any
) -> None:
    body = csv_bytes(generated_rows(3, "P1"))
    first = import_tenant.upload(body, key="same-key")
    assert first.status_code == 202
    again = import_tenant.upload(body, key="same-key")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    import_tenant.wait(first.json()["id"])
    other_file = import_tenant.upload(csv_bytes(generated_rows(4, "P1")), key="same-key")
    assert other_file.status_code == 409
    assert other_file["Content-Type"] == PROBLEM
    assert len(import_tenant.tasks()) == 3
    assert new_uploads() == set()


def test_upload_above_the_limit_gets_413_and_leaves_no_file(
    import_tenant: ImportTenant, new_uploads: Any
) -> None:
    body = csv_bytes(generated_rows(50, "P1"))
    with override_settings(IMPORT_MAX_UPLOAD_BYTES=len(body) - 1):
        declared = import_tenant.upload(body)
        streamed = import_tenant.upload(body, multipart=True)
    for response in (declared, streamed):
        assert response.status_code == 413, response.content
        assert response["Content-Type"] == PROBLEM
        assert response.json()["max_upload_bytes"] == len(body) - 1
    assert new_uploads() == set()


@pytest.mark.parametrize(
    ("header", "unknown", "missing"),
    [
        (("external_id", "project", "title", "colour"), ["colour"], []),
        (("external_id", "titel", "priority"), ["titel"], ["project", "title"]),
        (("P1", "first task"), ["p1", "first task"], ["project", "title"]),
    ],
)
def test_bad_header_gets_422_naming_the_columns(
    import_tenant: ImportTenant,
    header: tuple[str, ...],
    unknown: list[str],
    missing: list[str],
    new_uploads: Any,
) -> None:
    response = import_tenant.upload(csv_bytes([], header=header))
    assert response.status_code == 422, response.content
    body = response.json()
    assert response["Content-Type"] == PROBLEM
    assert body["unknown_columns"] == unknown
    assert body["missing_columns"] == missing
    for name in unknown + missing:
        assert name in body["detail"]
    assert new_uploads() == set()


def test_the_file_sent_as_a_plain_form_field_is_the_csv(import_tenant: ImportTenant) -> None:
    """RFC 7578 makes a part's filename optional; found by schemathesis, which sends a binary
    property as a plain field: it was refused as "no file"."""
    body = csv_bytes(generated_rows(2, "P1")).decode()
    response = import_tenant.client().post("/api/v1/imports", {"file": body})
    assert response.status_code == 202, response.content
    assert response.json()["file"]["size"] == len(body.encode())
    wrong = import_tenant.client().post("/api/v1/imports", {"file": "nope,columns\n"})
    assert wrong.status_code == 422, wrong.content
    assert wrong.json()["unknown_columns"] == ["nope", "columns"]


def test_empty_upload_is_422_and_missing_file_400(import_tenant: ImportTenant) -> None:
    """An empty file is a CSV without its header row (422, well-formed); no file at all is a
    malformed request (400)."""
    empty = import_tenant.upload(b"", multipart=True)
    assert empty.status_code == 422
    assert empty.json()["missing_columns"] == ["project", "title"]
    # (Django's test client drops the Content-Type of an empty body; real clients send it.)
    empty_body = import_tenant.client().post(
        "/api/v1/imports", b"", content_type="text/csv", CONTENT_TYPE="text/csv"
    )
    assert empty_body.status_code == 422, empty_body.content
    assert empty_body["Content-Type"] == PROBLEM
    assert empty_body.json()["errors"][0]["field"] == "file"
    no_file = import_tenant.client().post("/api/v1/imports", {"other": "x"})
    assert no_file.status_code == 400
    assert no_file.json()["errors"][0]["field"] == "file"
    wrong_type = import_tenant.client().post(
        "/api/v1/imports", "{}", content_type="application/json"
    )
    assert wrong_type.status_code == 415


def test_viewer_reads_jobs_but_may_not_import_or_export(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = csv_bytes(generated_rows(2, "P1"))
    assert import_tenant.upload(body, role="viewer").status_code == 403
    assert import_tenant.client("viewer").get("/api/v1/tasks/export").status_code == 403
    job = import_tenant.import_and_wait(body)
    assert import_tenant.client("viewer").get(f"/api/v1/imports/{job['id']}").status_code == 200
    listed = import_tenant.client("viewer").get("/api/v1/imports").json()["results"]
    assert [j["id"] for j in listed] == [job["id"]]
    cancel = import_tenant.client("viewer").post(f"/api/v1/imports/{job['id']}/cancel")
    assert cancel.status_code == 403


def test_another_tenants_job_is_not_found(
    import_tenant: ImportTenant, worker: object, committed: None
) -> None:
    from tests.taskflow.conftest import provisioned_tenant

    job = import_tenant.import_and_wait(csv_bytes(generated_rows(1, "P1")))
    other = provisioned_tenant()
    response = other.client("admin").get(f"/api/v1/imports/{job['id']}")
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM


# --- Validation ---------------------------------------------------------------------------------

BAD_ROWS = [
    ("OK-1", "P1", "fine", "", "todo", "1", "", "2030-01-31"),  # line 2
    ("OK-2", "NOPE", "no such project", "", "", "", "", ""),  # line 3
    ("OK-3", "", "no project", "", "", "", "", ""),  # line 4
    ("OK-4", "P1", "   ", "", "", "", "", ""),  # line 5
    ("OK-5", "P1", "x" * 501, "", "", "", "", ""),  # line 6
    ("OK-6", "P1", "bad status", "", "doing", "", "", ""),  # line 7
    ("OK-7", "P1", "priority too high", "", "", "5", "", ""),  # line 8
    ("OK-8", "P1", "priority not a number", "", "", "high", "", ""),  # line 9
    ("OK-9", "P1", "no such member", "", "", "", "nobody@example.com", ""),  # line 10
    ("OK-10", "P1", "not a date", "", "", "", "", "31/01/2030"),  # line 11
    ("OK-11", "P1", "no 30 February", "", "", "", "", "2030-02-30"),  # line 12
    ("E" * 101, "P1", "external id too long", "", "", "", "", ""),  # line 13
    ("OK-1", "P1", "repeats line 2", "", "", "", "", ""),  # line 14
    ("OK-12", "NOPE", "two faults", "", "someday", "", "", ""),  # line 15
    ("", "P1", "no external id is fine", "", "", "", "", "2028-02-29"),  # line 16
]
EXPECTED_REJECTS = [
    ["2", "external_id", "is repeated in the file (also on line 14)"],
    ["3", "project", "no live project has this key"],
    ["4", "project", "is required"],
    ["5", "title", "is required"],
    ["6", "title", "is longer than 500 characters"],
    ["7", "status", "must be one of todo, in_progress, done, cancelled"],
    ["8", "priority", "must be an integer from 0 to 4"],
    ["9", "priority", "must be an integer from 0 to 4"],
    ["10", "assignee", "no member of this tenant has this email"],
    ["11", "due_date", "must be a date as YYYY-MM-DD"],
    ["12", "due_date", "must be a date as YYYY-MM-DD"],
    ["13", "external_id", "is longer than 100 characters"],
    ["14", "external_id", "is repeated in the file (also on line 2)"],
    ["15", "project", "no live project has this key"],
    ["15", "status", "must be one of todo, in_progress, done, cancelled"],
]


def test_all_or_nothing_reports_every_fault_with_its_line_and_writes_nothing(
    import_tenant: ImportTenant, worker: object
) -> None:
    job = import_tenant.import_and_wait(csv_bytes(BAD_ROWS))
    assert job["status"] == "failed"
    assert (job["rows_read"], job["rejected"], job["inserted"]) == (15, 14, 0)
    assert "14 of 15 rows were rejected" in job["error"]
    assert "Line 2, external_id: is repeated in the file (also on line 14)." in job["error"]
    errors = import_tenant.errors(job["id"])
    assert errors[0] == ["line", "column", "reason", *HEADER]
    assert [row[:3] for row in errors[1:]] == EXPECTED_REJECTS
    # Each fault carries its row as the file had it, so the rows can be fixed and sent again.
    assert [row[3:] for row in errors[1:]] == [
        list(BAD_ROWS[int(row[0]) - 2]) for row in errors[1:]
    ]
    assert import_tenant.tasks() == []
    assert import_tenant.sql("SELECT count(*) FROM tenant.tasks_history")[0][0] == 0


def test_skip_invalid_writes_the_valid_rows_and_reports_the_rest(
    import_tenant: ImportTenant, worker: object
) -> None:
    job = import_tenant.import_and_wait(csv_bytes(BAD_ROWS), mode="skip-invalid")
    assert job["status"] == "succeeded"
    assert (job["rows_read"], job["inserted"], job["rejected"]) == (15, 1, 14)
    assert [row[:3] for row in import_tenant.errors(job["id"])[1:]] == EXPECTED_REJECTS
    assert [(t.external_id, t.title) for t in import_tenant.tasks()] == [
        (None, "no external id is fine")
    ]


def test_assignee_email_maps_to_a_member_case_insensitively(
    import_tenant: ImportTenant, worker: object
) -> None:
    email = f"member-{import_tenant.fixture.tenant.slug}@example.com"
    rows = [("A-1", "P1", "assigned", "", "", "", email.upper(), "")]
    job = import_tenant.import_and_wait(csv_bytes(rows))
    assert job["status"] == "succeeded", job
    assert import_tenant.tasks()[0].assignee_id == import_tenant.fixture.user_ids["member"]


def test_malformed_and_valid_rows_together_fail_with_only_structural_faults(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = csv_bytes(generated_rows(3, "P1")) + b"X-1,P1,ragged\n"
    job = import_tenant.import_and_wait(body, mode="skip-invalid")
    assert job["status"] == "failed"
    assert import_tenant.errors(job["id"])[1:] == [["5", "", "has 3 fields; the header has 8"]]
    assert import_tenant.tasks() == []


# --- Upserts ------------------------------------------------------------------------------------


def test_reimport_updates_changed_rows_leaves_unchanged_ones_and_keeps_absent_columns(
    import_tenant: ImportTenant, worker: object
) -> None:
    rows = generated_rows(5, "P1")
    first = import_tenant.import_and_wait(csv_bytes(rows))
    assert first["inserted"] == 5
    changed = [("EXT-0000001", "P1", "Renamed", "done"), ("EXT-0000002", "P1", "Task 2", "todo")]
    changed += [("EXT-0000003", "P1", "Task 3", "cancelled"), ("NEW-1", "P1", "New", "todo")]
    second = import_tenant.import_and_wait(
        csv_bytes(changed, header=("external_id", "project", "title", "status"))
    )
    assert second["status"] == "succeeded", second
    assert (second["inserted"], second["updated"], second["unchanged"]) == (1, 2, 1)
    tasks = {t.external_id: t for t in import_tenant.tasks()}
    assert (tasks["EXT-0000001"].title, tasks["EXT-0000001"].status) == ("Renamed", "done")
    assert tasks["EXT-0000001"].version == 2
    assert tasks["EXT-0000001"].description == "Description of 1"  # column absent: kept
    assert tasks["EXT-0000001"].priority == 1
    assert tasks["EXT-0000003"].version == 1  # unchanged: no new version
    updates = import_tenant.sql(
        "SELECT t.external_id, h.changes FROM tenant.tasks_history h"
        " JOIN tenant.tasks t ON t.id = h.row_id WHERE h.operation = 'update' ORDER BY t.external_id"
    )
    assert [(u[0], u[1]) for u in updates] == [
        ("EXT-0000001", {"title": ["Task 1", "Renamed"], "status": ["in_progress", "done"]}),
        ("EXT-0000002", {"status": ["done", "todo"]}),
    ]


def test_external_id_of_a_deleted_task_is_rejected(
    import_tenant: ImportTenant, worker: object
) -> None:
    import_tenant.import_and_wait(csv_bytes(generated_rows(2, "P1")))
    task_id = import_tenant.sql("SELECT id FROM tenant.tasks WHERE external_id = 'EXT-0000000'")[0][
        0
    ]
    deleted = import_tenant.client("admin").delete(
        f"/api/v1/tasks/{task_id}", headers={"If-Match": '"1"'}
    )
    assert deleted.status_code == 204
    body = csv_bytes(
        [
            ("EXT-0000000", "P1", "back?", "", "", "", "", ""),
            ("EXT-0000001", "P1", "changed", "", "", "", "", ""),
        ]
    )
    failed = import_tenant.import_and_wait(body)
    assert failed["status"] == "failed"
    assert import_tenant.errors(failed["id"])[1:] == [
        ["2", "external_id", "belongs to a deleted task; restore it first",
         "EXT-0000000", "P1", "back?", "", "", "", "", ""]
    ]  # fmt: skip
    assert {t.title for t in import_tenant.tasks()} == {"Task 0", "Task 1"}
    skipped = import_tenant.import_and_wait(body, mode="skip_invalid")
    assert (skipped["updated"], skipped["rejected"]) == (1, 1)
    assert {t.title for t in import_tenant.tasks()} == {"Task 0", "changed"}


# --- Export -------------------------------------------------------------------------------------


def test_export_streams_the_tasks_in_import_columns_and_reimports_unchanged(
    import_tenant: ImportTenant, worker: object
) -> None:
    email = f"member-{import_tenant.fixture.tenant.slug}@example.com"
    rows = generated_rows(4, "P1")
    rows[1] = (*rows[1][:6], email, rows[1][7])
    import_tenant.import_and_wait(csv_bytes(rows))
    # At 2026-12-01 the file says due_date, as the import file did (taskflow.api_versions).
    response = import_tenant.client("member").get(
        "/api/v1/tasks/export", headers={"TaskFlow-Version": "2026-12-01"}
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    exported = list(csv.reader(io.StringIO(body.decode())))
    assert exported[0] == ["id", *HEADER]
    assert exported[2][1:] == [str(v) for v in rows[1]]
    again = import_tenant.import_and_wait(body)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 4)


# --- Cancel -------------------------------------------------------------------------------------


def test_cancel_a_running_import_rolls_it_back(
    import_tenant: ImportTenant, worker: object, tmp_path: Path
) -> None:
    from tests.imports.conftest import write_generated_csv

    path = write_generated_csv(tmp_path / "big.csv", 300_000, "P1")
    created = import_tenant.upload(path.read_bytes()).json()
    import_tenant.wait(created["id"], until={"running"})
    cancelled = import_tenant.client("member").post(f"/api/v1/imports/{created['id']}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    job = import_tenant.wait(created["id"])
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None
    assert import_tenant.sql("SELECT count(*) FROM tenant.tasks")[0][0] == 0
    again = import_tenant.client("member").post(f"/api/v1/imports/{created['id']}/cancel")
    assert again.status_code == 202  # cancelling a cancelled job is a no-op
    done = import_tenant.import_and_wait(csv_bytes(generated_rows(1, "P1")))
    refused = import_tenant.client("member").post(f"/api/v1/imports/{done['id']}/cancel")
    assert refused.status_code == 409


def test_cancel_a_queued_import_before_any_worker_runs_it(
    import_tenant: ImportTenant, new_uploads: Any, no_import_consumers: None
) -> None:
    from control_plane.imports.running import run_import_job

    created = import_tenant.upload(csv_bytes(generated_rows(3, "P1"))).json()
    cancelled = import_tenant.client("member").post(f"/api/v1/imports/{created['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    run_import_job(import_tenant.stored(created["id"]).pk)  # what a worker does with it later
    job = import_tenant.job(created["id"])
    assert (job["status"], job["attempts"]) == ("cancelled", 0)
    assert job["finished_at"] is not None
    assert new_uploads() == set()
    assert import_tenant.tasks() == []
