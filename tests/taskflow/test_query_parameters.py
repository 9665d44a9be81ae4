"""Each operation accepts only the query parameters it declares (taskflow.openapi): a typo such
as `?sortt=` or `?deleted=` is a 400 problem naming the allowed ones, never a silent no-op."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.taskflow.conftest import TenantFixture
from tests.taskflow.test_api import assert_problem, make_project, make_task

# Every list (and read) endpoint of /api/v1, with the parameters it declares.
LISTS = {
    "/api/v1/projects": ["sort", "cursor", "limit", "include_deleted"],
    "/api/v1/tasks": [
        "sort", "cursor", "limit", "include_deleted",
        "status", "project", "assignee", "due_before", "due_after", "q",
    ],
    "/api/v1/tasks/{task}/history": ["cursor", "limit"],
    "/api/v1/tasks/{task}/comments": ["sort", "cursor", "limit"],
    "/api/v1/imports": [],
}  # fmt: skip
READS = {
    "/api/v1/projects/{project}": ["include_deleted"],
    "/api/v1/tasks/{task}": ["include_deleted"],
    "/api/v1/me": [],
    "/api/v1/tasks/export": ["status", "project", "assignee", "due_before", "due_after", "q"],
}


def _path(template: str, tenant: TenantFixture) -> str:
    api = tenant.api("admin")
    project = make_project(api)
    task = make_task(api, project["id"])
    return template.format(project=project["id"], task=task["id"])


@pytest.mark.parametrize("template", [*LISTS, *READS])
@pytest.mark.parametrize("unknown", ["sortt", "deleted"])
def test_unknown_query_parameter_is_a_400_naming_the_allowed_ones(
    tenant_a: TenantFixture, template: str, unknown: str
) -> None:
    allowed = {**LISTS, **READS}[template]
    response = tenant_a.client("admin").get(_path(template, tenant_a), {unknown: "1"})
    body = assert_problem(response, 400)
    assert body["errors"][0]["field"] == unknown
    assert body["allowed_query_parameters"] == allowed
    for name in allowed:
        assert name in body["errors"][0]["message"]


@pytest.mark.parametrize("template", list(LISTS))
def test_declared_parameters_are_accepted(tenant_a: TenantFixture, template: str) -> None:
    params = {"limit": "1"} if "limit" in LISTS[template] else {}
    if "sort" in LISTS[template]:
        params["sort"] = "-created_at"
    response = tenant_a.client("admin").get(_path(template, tenant_a), params)
    assert response.status_code == 200, response.content


def test_a_write_takes_no_undeclared_query_parameter(tenant_a: TenantFixture) -> None:
    response = tenant_a.client("member").post(
        "/api/v1/projects?dry_run=1", {"key": "KQ1", "name": "x"}, content_type="application/json"
    )
    body = assert_problem(response, 400)
    assert body["allowed_query_parameters"] == []


def test_an_unauthenticated_caller_learns_nothing_about_parameters(tenant_a: TenantFixture) -> None:
    response = Client(HTTP_HOST=tenant_a.host).get("/api/v1/tasks", {"sortt": "x"})
    assert_problem(response, 401)


@pytest.mark.parametrize(
    "template",
    ["/api/v1/projects", "/api/v1/tasks", "/api/v1/projects/{project}", "/api/v1/tasks/{task}"],
)
@pytest.mark.parametrize("value", ["null", "yes", ""])
def test_a_boolean_parameter_that_is_neither_true_nor_false_is_a_400(
    tenant_a: TenantFixture, template: str, value: str
) -> None:
    """Found by schemathesis: `?include_deleted=null` was read as false and answered 200."""
    response = tenant_a.client("admin").get(_path(template, tenant_a), {"include_deleted": value})
    body = assert_problem(response, 400)
    assert body["errors"] == [
        {"field": "include_deleted", "message": "include_deleted must be true or false."}
    ]


@pytest.mark.parametrize("value", ["true", "false", "1", "0"])
def test_each_spelling_of_a_boolean_is_accepted(tenant_a: TenantFixture, value: str) -> None:
    response = tenant_a.client("admin").get("/api/v1/projects", {"include_deleted": value})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "value",
    [
        "", "20261130", "2026-02-30", "0000-01-01", "2026-11-30T00:00:00",
        "2026-11-30 09:00:00Z", "2026-11-30T25",
    ],
)  # fmt: skip
def test_a_due_filter_that_is_neither_a_full_date_nor_a_time_with_its_offset_is_a_400(
    tenant_a: TenantFixture, value: str
) -> None:
    """Found by schemathesis: `?due_before=` (empty) answered 200 as if the filter were absent."""
    response = tenant_a.client("admin").get("/api/v1/tasks", {"due_before": value})
    body = assert_problem(response, 400)
    assert body["errors"][0]["field"] == "due_before"


def test_february_29th_of_a_common_year_is_well_formed_but_unprocessable(
    tenant_a: TenantFixture,
) -> None:
    """Found by schemathesis: the description's pattern admits every month's own days, leap
    years aside; the server answers the one date it cannot tell by pattern with a 422."""
    response = tenant_a.client("admin").get("/api/v1/tasks", {"due_after": "2026-02-29"})
    body = assert_problem(response, 422)
    assert body["errors"] == [
        {"field": "due_after", "message": "2026-02-29 is not a day of the calendar."}
    ]
    leap = tenant_a.client("admin").get("/api/v1/tasks", {"due_after": "2028-02-29"})
    assert leap.status_code == 200, leap.content


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("/api/v1/tasks", "limit"),
        ("/api/v1/tasks", "assignee"),
        ("/api/v1/tasks", "project"),
        ("/api/v1/projects", "limit"),
    ],
)
def test_an_empty_integer_parameter_is_a_400_not_an_absent_one(
    tenant_a: TenantFixture, template: str, name: str
) -> None:
    """Found by schemathesis' long profile: `?limit=` and `?assignee=` were read as absent."""
    response = tenant_a.client("admin").get(template, {name: ""})
    body = assert_problem(response, 400)
    assert body["errors"] == [{"field": name, "message": f"{name} must be an integer."}]


def test_an_export_with_a_repeated_status_is_the_same_export(tenant_a: TenantFixture) -> None:
    """The document allows `status=done,done` (no uniqueItems); the server must agree."""
    api = tenant_a.api("admin")
    project = make_project(api)
    make_task(api, project["id"], title="Shipped", status="done")
    client = tenant_a.client("admin")
    once = client.get("/api/v1/tasks/export", {"status": "done", "project": project["id"]})
    twice = client.get("/api/v1/tasks/export", {"status": "done,done", "project": project["id"]})
    assert once.status_code == twice.status_code == 200
    body = b"".join(once.streaming_content)  # type: ignore[attr-defined]
    assert b"Shipped" in body
    assert b"".join(twice.streaming_content) == body  # type: ignore[attr-defined]
