"""Sessions, CSRF, the admin's user and messages run on the public host and nowhere else."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.factories import make_member, make_tenant

pytestmark = pytest.mark.django_db


def test_a_tenant_host_request_has_no_session_user_or_cookies(unique: str) -> None:
    tenant = make_tenant(f"m{unique}")
    _, token = make_member(tenant, f"m{unique}@example.com")
    client = Client(enforce_csrf_checks=True)
    client.cookies["sessionid"] = "whatever"
    response = client.get(
        "/api/v1/me", HTTP_HOST=f"m{unique}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 200
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "_messages")
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    assert response["X-Frame-Options"] == "DENY"  # the layers every host keeps still run


def test_the_public_host_refuses_a_form_post_without_a_csrf_token(unique: str) -> None:
    User.objects.create_superuser(f"op_{unique}", f"op{unique}@example.com", "pw-1234567")
    client = Client(enforce_csrf_checks=True)
    form = {"username": f"op_{unique}", "password": "pw-1234567"}
    refused = client.post("/admin/login/", form, HTTP_HOST="localhost")
    assert refused.status_code == 403

    page = client.get("/admin/login/", HTTP_HOST="localhost")
    assert "csrftoken" in page.cookies
    token = page.cookies["csrftoken"].value
    signed_in = client.post(
        "/admin/login/", {**form, "csrfmiddlewaretoken": token}, HTTP_HOST="localhost"
    )
    assert signed_in.status_code == 302
    assert "sessionid" in signed_in.cookies
    assert client.get("/admin/", HTTP_HOST="localhost").status_code == 200
