"""Tenant resolution by host and the probes every host answers."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def test_unknown_host_gets_a_problem_404_not_a_500(client: Client) -> None:
    response = client.get("/", HTTP_HOST="nobody.localhost")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "No tenant is served at 'nobody.localhost'."


def test_tenant_host_routes_to_the_tenant_urlconf(client: Client, unique: str) -> None:
    make_tenant(f"r{unique}")
    response = client.get("/", HTTP_HOST=f"r{unique}.localhost")
    assert response.status_code == 200
    assert response.json()["tenant"] == f"r{unique}"


@pytest.mark.parametrize("form", ["{}", "{}.", "{}:8000", "www.{}", "WWW.{}.:8000"])
def test_a_host_is_routed_as_onboarding_normalised_it(
    client: Client, unique: str, form: str
) -> None:
    """Case, a trailing dot, a port and a leading www. (django-tenants' routing) never change
    which tenant a host reaches."""
    make_tenant(f"c{unique}")
    response = client.get("/", HTTP_HOST=form.format(f"C{unique}.LocalHost"))
    assert response.status_code == 200
    assert response.json()["tenant"] == f"c{unique}"


def test_public_host_routes_to_the_control_plane(client: Client) -> None:
    response = client.get("/", HTTP_HOST="localhost")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "nobody.localhost"])
def test_healthz_answers_on_every_host(client: Client, host: str) -> None:
    response = client.get("/healthz", HTTP_HOST=host)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_on_a_tenant_host_reports_each_dependency(client: Client, unique: str) -> None:
    make_tenant(f"h{unique}")
    response = client.get("/readyz", HTTP_HOST=f"h{unique}.localhost")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert {c["name"]: c["ok"] for c in body["checks"]} == {
        "postgres": True,
        "redis": True,
        "migrations": True,
    }


def test_readyz_is_503_when_redis_is_unreachable(client: Client) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get("/readyz", HTTP_HOST="localhost")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["redis"]["ok"] is False
    assert checks["postgres"]["ok"] is True
    # Probes answer anyone: no host, port or exception text.
    assert checks["redis"]["detail"] == "unavailable"
    assert b"127.0.0.1" not in response.content
    assert b"Error" not in response.content


def test_probes_refuse_writes(client: Client) -> None:
    response = client.post("/healthz", HTTP_HOST="localhost")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
