"""Every error on every host and path is application/problem+json (RFC 9457): the ones Django
answers by itself (DEBUG's pages, a bad Host, a body too big) and the ones a hostile request
could once turn into a 500. The admin's pages on the public host stay HTML for humans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.factories import make_token, make_user, public_tenant
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

PROBLEM = "application/problem+json"
SECRETS = (b"DATABASE_URL", b"MIGRATION_DATABASE_URL", b"taskflow_owner", b"taskflow_app")


@pytest.fixture(scope="module")
def tenant(django_db_blocker: Any) -> Iterator[TenantFixture]:
    with django_db_blocker.unblock():
        fixture = provisioned_tenant()
    yield fixture
    with django_db_blocker.unblock():
        discard(fixture)


@pytest.fixture
def api(tenant: TenantFixture, committed: None) -> Client:
    return tenant.client("admin")


@pytest.fixture
def debug(settings: Any) -> None:
    """The default development environment: DEBUG on (pytest-django turns it off)."""
    settings.DEBUG = True


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM, response.content[:500]
    assert not any(secret in response.content for secret in SECRETS)
    body: dict[str, Any] = json.loads(response.content)
    assert body["status"] == status
    return body


@pytest.mark.parametrize("path", ["/api/v1/nowhere", "/api/v1/tasks/", "/nowhere", "/api/v1/x/"])
def test_unknown_routes_on_a_tenant_host_are_404_problems_even_in_debug(
    api: Client, debug: None, path: str
) -> None:
    problem(api.get(path), 404)


def test_unknown_routes_on_the_public_host_are_404_problems_even_in_debug(
    debug: None, committed: None
) -> None:
    problem(Client(HTTP_HOST="localhost").get("/ops/v1/nowhere"), 404)
    problem(Client(HTTP_HOST="localhost").get("/nowhere"), 404)


def test_the_admin_pages_stay_html(debug: None, committed: None, unique: str) -> None:
    admin = Client(HTTP_HOST="localhost")
    admin.force_login(
        User.objects.create_superuser(f"admin{unique}", f"admin{unique}@example.com", "unused")
    )
    response = admin.get("/admin/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("host", ["evil.example.com", "bad host", "tést.localhost", "a" * 300])
@pytest.mark.parametrize("debug_on", [True, False])
def test_a_disallowed_host_is_a_400_problem(
    settings: Any, committed: None, host: str, debug_on: bool
) -> None:
    settings.DEBUG = debug_on
    problem(Client(HTTP_HOST=host).get("/api/v1/tasks"), 400)


def test_a_server_error_never_shows_settings_in_debug(
    tenant: TenantFixture, committed: None, debug: None, monkeypatch: Any
) -> None:
    from taskflow import selectors

    def broken(**_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "task_list", broken)
    client = tenant.client("admin")
    client.raise_request_exception = False
    problem(client.get("/api/v1/tasks"), 500)


def test_a_nul_in_the_query_is_a_400_problem(api: Client, debug: None) -> None:
    problem(api.get("/api/v1/tasks", {"q": "a\x00b"}), 400)
    problem(api.get("/api/v1/tasks?q=a%00b"), 400)


def test_json_nested_thousands_deep_is_a_400_problem(api: Client) -> None:
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        problem(api.post("/api/v1/projects", body, content_type="application/json"), 400)


def test_a_body_past_the_upload_limit_is_a_413_problem(api: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"key": "BIG", "name": "x", "description": "y" * 5000})
    problem(api.post("/api/v1/projects", body, content_type="application/json"), 413)


def test_too_many_query_parameters_is_a_400_problem(api: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    problem(api.get("/api/v1/tasks?" + "&".join(f"x{i}=1" for i in range(20))), 400)


def test_ops_errors_are_problems_too(debug: None, committed: None, unique: str) -> None:
    token = make_token(make_user(f"staff{unique}@example.com", staff=True), public_tenant())
    ops = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    problem(ops.get("/ops/v1/migration-runs/1/"), 404)
    problem(ops.get("/ops/v1/tenants/tést"), 404)
    body = "[" * 100_000 + "]" * 100_000
    problem(ops.post("/ops/v1/migration-runs", body, content_type="application/json"), 400)
