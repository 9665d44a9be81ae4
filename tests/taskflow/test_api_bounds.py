"""What the API does with input past its bounds: ids past bigint, foreign cursors, If-Match on
restore. Each case was a 500 or a silent acceptance before; each is a 4xx problem now."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.taskflow.conftest import TenantFixture
from tests.taskflow.test_api import assert_problem, make_project, make_task

PAST_BIGINT = str(2**63)
MAX_BIGINT = str(2**63 - 1)


@pytest.mark.parametrize("tail", ["", "/restore", "/history", "/comments"])
@pytest.mark.parametrize("number", [PAST_BIGINT, "9" * 40, "9" * 5000, "0"])
def test_task_ids_outside_bigint_in_a_path_are_404(
    tenant_a: TenantFixture, tail: str, number: str
) -> None:
    api = tenant_a.api()
    assert_problem(api.get(f"/api/v1/tasks/{number}{tail}"), 404)
    assert_problem(api.post(f"/api/v1/tasks/{number}{tail}"), 404)


@pytest.mark.parametrize("tail", ["", "/restore"])
def test_project_ids_past_bigint_in_a_path_are_404(tenant_a: TenantFixture, tail: str) -> None:
    api = tenant_a.api()
    assert_problem(api.get(f"/api/v1/projects/{PAST_BIGINT}{tail}"), 404)
    assert_problem(api.post(f"/api/v1/projects/{PAST_BIGINT}{tail}"), 404)
    if not tail:
        assert_problem(api.patch(f"/api/v1/projects/{PAST_BIGINT}", {"name": "x"}), 404)
        assert_problem(api.delete(f"/api/v1/projects/{PAST_BIGINT}"), 404)


def test_the_largest_bigint_is_an_ordinary_unknown_id(tenant_a: TenantFixture) -> None:
    api = tenant_a.api()
    assert_problem(api.get(f"/api/v1/tasks/{MAX_BIGINT}"), 404)
    assert_problem(api.get(f"/api/v1/projects/{MAX_BIGINT}/restore"), 405)
    assert_problem(api.post(f"/api/v1/tasks/{MAX_BIGINT}/comments", {"body": "x"}), 404)


@pytest.mark.parametrize("suffix", ["", "/errors", "/cancel"])
def test_import_job_ids_past_bigint_are_404(tenant_a: TenantFixture, suffix: str) -> None:
    client = tenant_a.client()
    response = (client.post if suffix == "/cancel" else client.get)(
        f"/api/v1/imports/{PAST_BIGINT}{suffix}"
    )
    assert_problem(response, 404)


@pytest.mark.parametrize("field", ["project_id", "assignee_id"])
@pytest.mark.parametrize("value", [2**63, 10**30, -1, 0])
def test_reference_ids_outside_bigint_in_a_body_are_400(
    tenant_a: TenantFixture, field: str, value: int
) -> None:
    api = tenant_a.api()
    project = make_project(api)
    body = {"project_id": project["id"], "title": "x", field: value}
    problem = assert_problem(api.post("/api/v1/tasks", body), 400)
    assert [e["field"] for e in problem["errors"]] == [field]
    task = make_task(api, project["id"])
    problem = assert_problem(
        api.patch(f"/api/v1/tasks/{task['id']}", {field: value}, **{"If-Match": '"1"'}), 400
    )
    assert [e["field"] for e in problem["errors"]] == [field]


def test_the_largest_bigint_in_a_body_is_an_ordinary_unknown_project(
    tenant_a: TenantFixture,
) -> None:
    problem = assert_problem(
        tenant_a.api().post("/api/v1/tasks", {"project_id": 2**63 - 1, "title": "x"}), 422
    )
    assert problem["errors"][0]["message"] == f"No live project {2**63 - 1}."


def cursor_of(response: Any) -> str:
    assert response.status_code == 200, response.content
    return parse_qs(urlsplit(response.json()["next"]).query)["cursor"][0]


def test_a_cursor_of_one_list_is_refused_by_another(tenant_a: TenantFixture) -> None:
    api = tenant_a.api()
    project = make_project(api)
    make_project(api)
    task = make_task(api, project["id"])
    make_task(api, project["id"])
    api.post(f"/api/v1/tasks/{task['id']}/comments", {"body": "one"})
    api.post(f"/api/v1/tasks/{task['id']}/comments", {"body": "two"})
    tasks = cursor_of(api.get("/api/v1/tasks", limit=1))
    projects = cursor_of(api.get("/api/v1/projects", limit=1))
    comments = cursor_of(api.get(f"/api/v1/tasks/{task['id']}/comments", limit=1))
    for path, foreign in [
        ("/api/v1/projects", tasks),
        ("/api/v1/tasks", projects),
        ("/api/v1/projects", comments),
        ("/api/v1/tasks", comments),
    ]:
        problem = assert_problem(api.get(path, cursor=foreign, limit=1), 400)
        assert problem["title"] == "Invalid cursor"
    assert api.get("/api/v1/tasks", cursor=tasks, limit=1).status_code == 200


@pytest.mark.parametrize("resource", ["tasks", "projects"])
def test_restore_honours_if_match_and_the_body_version(
    tenant_a: TenantFixture, resource: str
) -> None:
    api = tenant_a.api()
    project = make_project(api)
    row = project if resource == "projects" else make_task(api, project["id"])
    path = f"/api/v1/{resource}/{row['id']}"
    assert api.delete(path, **{"If-Match": '"1"'}).status_code == 204
    deleted = api.get(path, include_deleted="true")
    version = deleted.json()["version"]
    assert deleted["ETag"] == f'"{version}"'
    problem = assert_problem(api.post(f"{path}/restore", **{"If-Match": '"1"'}), 412)
    assert problem["current_version"] == version
    assert_problem(api.post(f"{path}/restore", {"version": 1}), 409)
    assert_problem(api.post(f"{path}/restore", **{"If-Match": "nonsense"}), 400)
    assert api.get(path).status_code == 404  # still deleted
    restored = api.post(f"{path}/restore", **{"If-Match": f'"{version}"'})
    assert restored.status_code == 200
    assert restored.json()["deleted_at"] is None


def test_restore_without_a_version_still_restores(tenant_a: TenantFixture) -> None:
    """Unlike delete, restore requires no version: it only undoes a delete."""
    api = tenant_a.api()
    task = make_task(api, make_project(api)["id"])
    path = f"/api/v1/tasks/{task['id']}"
    assert api.delete(path, **{"If-Match": '"1"'}).status_code == 204
    assert api.post(f"{path}/restore").status_code == 200
    assert api.post(f"{path}/restore").status_code == 200


@pytest.mark.parametrize("etag", ['"' + "9" * 5000 + '"', "9" * 19, '"٣"', '""', "W/"])
def test_an_if_match_that_is_no_version_is_400(tenant_a: TenantFixture, etag: str) -> None:
    api = tenant_a.api()
    task = make_task(api, make_project(api)["id"])
    path = f"/api/v1/tasks/{task['id']}"
    problem = assert_problem(api.patch(path, {"title": "x"}, **{"If-Match": etag}), 400)
    assert problem["errors"][0]["field"] == "If-Match"
    assert_problem(api.delete(path, **{"If-Match": etag}), 400)


@pytest.mark.parametrize("name", ["project", "assignee"])
@pytest.mark.parametrize("value", ["9" * 5000, "9" * 20, PAST_BIGINT])
def test_id_filters_too_long_to_be_ids_are_400(
    tenant_a: TenantFixture, name: str, value: str
) -> None:
    problem = assert_problem(tenant_a.api().get("/api/v1/tasks", **{name: value}), 400)
    assert problem["errors"][0]["field"] == name


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("post", "/api/v1/projects", "{}", "application/json; charset=nonsense", 400),
        ("post", "/api/v1/projects", b"\xff\xfe{", "application/json", 400),
        ("post", "/api/v1/projects", "", "application/json", 400),
        ("post", "/api/v1/projects", "null", "application/json", 400),
        ("post", "/api/v1/projects", "[]", "application/json", 400),
        ("post", "/api/v1/projects", "1e999999", "application/json", 400),
        ("post", "/api/v1/projects", '{"key": "A\\u0000"}', "application/json", 400),
        ("post", "/api/v1/projects", '{"key": "\\ud800"}', "application/json", 400),
        ("post", "/api/v1/projects", "{}", "application/merge-patch+json", 415),
        ("post", "/api/v1/projects", "x", "text/csv", 415),
        ("post", "/api/v1/projects", "--b\r\n", "multipart/form-data; boundary=b", 415),
        ("post", "/api/v1/imports", "{}", "application/json", 415),
        ("post", "/api/v1/imports", "", "text/csv", 400),
        ("delete", "/api/v1/tasks/{task}", "true", "application/json", 400),
        ("delete", "/api/v1/tasks/{task}", '{"version": "x"}', "application/json", 400),
        ("patch", "/api/v1/tasks/{task}", '"text"', "application/json", 400),
        (
            "patch",
            "/api/v1/tasks/{task}",
            '{"version": ' + "9" * 5000 + "}",
            "application/json",
            400,
        ),
    ],
)
def test_odd_bodies_and_content_types_are_4xx_problems(
    tenant_a: TenantFixture, method: str, path: str, body: Any, content_type: str, status: int
) -> None:
    api = tenant_a.api()
    task = make_task(api, make_project(api)["id"])
    # generic() sends the bytes as given (post() would encode them in the declared charset).
    data = body.encode() if isinstance(body, str) else body
    response = api.client.generic(
        method.upper(), path.format(task=task["id"]), data, content_type=content_type
    )
    assert_problem(response, status)


@pytest.mark.parametrize("limit", ["-1", "0", "201", "9" * 5000, "1e3", "0x10", " "])
@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/projects", "/api/v1/imports"])
def test_limits_out_of_range_are_400_or_ignored(
    tenant_a: TenantFixture, path: str, limit: str
) -> None:
    response = tenant_a.api().get(path, limit=limit)
    assert response.status_code in {200, 400}, response.content
    if response.status_code == 400:
        assert response["Content-Type"] == "application/problem+json"


def test_the_openapi_document_bounds_path_ids(tenant_a: TenantFixture) -> None:
    response = tenant_a.api().get("/api/v1/schema", format="json")
    assert response.status_code == 200
    parameters = [
        parameter
        for operation in response.json()["paths"]["/api/v1/tasks/{task_id}"].values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "task_id"
    ]
    assert parameters
    for parameter in parameters:
        assert parameter["schema"] == {
            "type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1,
        }  # fmt: skip
