"""The API's description: every operation of /api/v1 and /ops/v1 described with zero generator
warnings, the bearer scheme, the version header, problem responses, links; the operator API's
description and docs for staff only."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from django.test import Client

from control_plane.http.contract import DOCUMENTS, generate
from taskflow.api_versions import CATALOG
from tests.conftest import ROOT
from tests.factories import make_token, make_user, public_tenant

PROBLEM = "application/problem+json"
METHODS = {"get", "post", "patch", "put", "delete"}


@pytest.fixture(scope="module")
def documents() -> dict[str, Any]:
    return {document.name: yaml.safe_load(generate(document)) for document in DOCUMENTS}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if method in METHODS
    ]


@pytest.mark.parametrize("urlconf", ["control_plane.urls_tenant", "control_plane.urls_public"])
def test_the_generator_reports_no_warning(urlconf: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
         "--urlconf", urlconf, "--file", "/dev/null"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert "Error" not in result.stderr, result.stderr


def test_every_operation_is_described(documents: dict[str, Any]) -> None:
    for name, document in documents.items():
        assert document["components"]["securitySchemes"]["bearerAuth"] == {
            **document["components"]["securitySchemes"]["bearerAuth"],
            "type": "http",
            "scheme": "bearer",
        }
        for path, method, operation in operations(document):
            where = f"{name}: {method.upper()} {path}"
            assert operation["operationId"][0].islower(), where
            assert operation["security"] == [{"bearerAuth": []}], where
            statuses = set(operation["responses"])
            assert {"400", "401", "403"} <= statuses, where
            success = [s for s in statuses if s.startswith("2")]
            assert success, where
            for status in statuses - set(success):
                content = operation["responses"][status]["content"]
                assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                    assert parameter["schema"]["minimum"] == 1, where
                    assert parameter["schema"]["maximum"] == 2**63 - 1, where


def test_tenant_operations_name_the_version_header(documents: dict[str, Any]) -> None:
    tenant = documents["tenant"]
    assert tenant["info"]["version"] == CATALOG.latest.name
    for path, method, operation in operations(tenant):
        header = [p for p in operation["parameters"] if p["name"] == "TaskFlow-Version"]
        assert len(header) == 1, (method, path)
        assert header[0]["schema"]["enum"] == list(CATALOG.names), (method, path)
        for response in operation["responses"].values():
            assert response["headers"]["TaskFlow-Version"] == {
                "$ref": "#/components/headers/TaskFlow-Version"
            }
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    for name in ("TaskFlow-Version", "Deprecation", "Sunset", "Link", "Retry-After"):
        assert name in tenant["components"]["headers"]


def test_every_operation_takes_and_answers_a_request_id(documents: dict[str, Any]) -> None:
    """X-Request-ID: accepted on every operation of both APIs, on every response of each."""
    for name, document in documents.items():
        for method, path, operation in operations(document):
            header = [p for p in operation["parameters"] if p["name"] == "X-Request-ID"]
            assert [p["in"] for p in header] == ["header"], (name, method, path)
            assert "pattern" not in header[0]["schema"]  # a malformed id is replaced, not refused
            for status, response in operation["responses"].items():
                assert response["headers"]["X-Request-ID"] == {
                    "$ref": "#/components/headers/X-Request-ID"
                }, (name, method, path, status)
        declared = document["components"]["headers"]["X-Request-ID"]
        assert declared["required"] is True
        pattern = re.compile(declared["schema"]["pattern"])
        assert pattern.match("0f3c9a7e5b2d4c1e8a6f9b0d2e4c6a8b")
        assert not pattern.match("a" * 65)
        assert not pattern.match("bad id")


def test_lists_declare_sort_cursor_and_limit(documents: dict[str, Any]) -> None:
    tasks = documents["tenant"]["paths"]["/api/v1/tasks"]["get"]
    parameters = {p["name"]: p for p in tasks["parameters"] if p["in"] == "query"}
    assert parameters["limit"]["schema"] == {
        "type": "integer", "minimum": 1, "maximum": 200, "default": 50
    }  # fmt: skip
    # The sort's grammar, as pagination.parse_sort applies it: each field once, id only last.
    sort = re.compile(parameters["sort"]["schema"]["pattern"])
    for accepted in ("", "-priority,due_at", "title,-id", "-id"):
        assert sort.search(accepted), accepted
    for refused in ("id,title", "title,-title", "title,,id", " title", "x", "-priority,-priority"):
        assert not sort.search(refused), refused
    assert parameters["status"]["schema"]["items"]["enum"] == [
        "todo", "in_progress", "done", "cancelled"
    ]  # fmt: skip
    assert parameters["cursor"]["schema"]["type"] == "string"


def test_writes_declare_bodies_headers_and_conflicts(documents: dict[str, Any]) -> None:
    paths = documents["tenant"]["paths"]
    create = paths["/api/v1/tasks"]["post"]
    assert create["requestBody"]["required"] is True
    created = create["responses"]["201"]
    assert {"ETag", "Location"} <= set(created["headers"])
    assert set(created["links"]) == {"GetTask", "UpdateTask", "DeleteTask"}
    assert created["links"]["UpdateTask"]["parameters"]["header.If-Match"] == (
        "$response.header.ETag"
    )
    patch = paths["/api/v1/tasks/{task_id}"]["patch"]
    assert "If-Match" in {p["name"] for p in patch["parameters"]}
    assert {"409", "412"} <= set(patch["responses"])
    delete = paths["/api/v1/tasks/{task_id}"]["delete"]
    assert {"204", "428"} <= set(delete["responses"])
    assert delete["responses"]["204"]["links"]["RestoreTask"]["operationId"] == "restoreTask"
    imports = paths["/api/v1/imports"]["post"]
    assert set(imports["requestBody"]["content"]) == {"text/csv", "multipart/form-data"}
    assert "Location" in imports["responses"]["202"]["headers"]
    schemas = documents["tenant"]["components"]["schemas"]
    task = schemas["TaskCreate"]
    assert task["required"] == ["project_id", "title"]
    assert task["properties"]["title"]["maxLength"] == 500
    problem = schemas["Problem"]["properties"]
    assert {"errors", "current", "current_version", "known_versions"} <= set(problem)


# --- The operator API's description is for staff ----------------------------------------------


@pytest.mark.django_db
def test_ops_schema_and_docs_need_staff(client: Client, unique: str) -> None:
    client.defaults.update(HTTP_HOST="localhost")
    member = make_token(make_user(f"m{unique}@example.com"), public_tenant())
    for path in ("/ops/v1/schema", "/ops/v1/docs"):
        assert client.get(path).status_code == 401
        refused = client.get(path, headers={"Authorization": f"Bearer {member}"})
        assert refused.status_code in {401, 403}
        assert refused["Content-Type"] == PROBLEM
    staff = make_token(make_user(f"s{unique}@example.com", staff=True), public_tenant())
    schema = client.get("/ops/v1/schema", headers={"Authorization": f"Bearer {staff}"})
    assert schema.status_code == 200
    assert b"/ops/v1/tenants" in schema.content
    docs = client.get("/ops/v1/docs", headers={"Authorization": f"Bearer {staff}"})
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.django_db
def test_ops_docs_open_for_a_staff_admin_session(operator: Client) -> None:
    operator.defaults.update(HTTP_HOST="localhost")
    assert operator.get("/ops/v1/docs").status_code == 200
    assert operator.get("/ops/v1/schema").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/ops/v1/tenants", "/ops/v1/migration-runs"])
def test_ops_lists_refuse_unknown_query_parameters(client: Client, unique: str, path: str) -> None:
    staff = make_token(make_user(f"s{unique}@example.com", staff=True), public_tenant())
    client.defaults.update(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {staff}")
    response = client.get(path, {"state": "active"})
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == "state"
