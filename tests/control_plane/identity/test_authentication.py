"""Bearer tokens: accepted only on their own tenant's host, and every refusal looks the same."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from control_plane.identity.models import ApiToken
from tests.factories import make_member, make_tenant, make_token, make_user, public_tenant

pytestmark = pytest.mark.django_db


def me(client: Client, host: str, token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = client.get("/api/v1/me", HTTP_HOST=host, headers=headers)
    return response.status_code, response.json()


def test_member_token_works_on_its_own_tenant_host(client, unique) -> None:
    tenant = make_tenant(f"a{unique}")
    _, token = make_member(tenant, f"m{unique}@example.com", role="viewer")
    status, body = me(client, f"a{unique}.localhost", token)
    assert status == 200
    assert body["role"] == "viewer"
    assert body["tenant"] == f"a{unique}"


def test_token_of_another_tenant_gets_the_same_401_as_an_unknown_token(client, unique) -> None:
    tenant_a = make_tenant(f"a{unique}")
    make_tenant(f"b{unique}")
    _, token = make_member(tenant_a, f"m{unique}@example.com")
    wrong_host = me(client, f"b{unique}.localhost", token)
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    unknown = me(client, f"b{unique}.localhost", forged)
    garbage = me(client, f"b{unique}.localhost", "not-a-token")
    assert wrong_host[0] == unknown[0] == garbage[0] == 401
    assert wrong_host[1] == unknown[1] == garbage[1]
    response = client.get(
        "/api/v1/me", HTTP_HOST=f"b{unique}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"] == "Bearer"


def test_missing_token_is_401_problem(client, unique) -> None:
    make_tenant(f"a{unique}")
    status, body = me(client, f"a{unique}.localhost", None)
    assert status == 401
    assert body["title"] == "Not authenticated"


@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": timezone.now()},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
)
def test_revoked_and_expired_tokens_are_refused(client, unique, change) -> None:
    tenant = make_tenant(f"a{unique}")
    user, token = make_member(tenant, f"m{unique}@example.com")
    ApiToken.objects.filter(user=user).update(**change)
    assert me(client, f"a{unique}.localhost", token)[0] == 401


def test_token_without_membership_is_refused(client, unique) -> None:
    tenant = make_tenant(f"a{unique}")
    token = make_token(make_user(f"x{unique}@example.com"), tenant)
    assert me(client, f"a{unique}.localhost", token)[0] == 401


def test_tenant_token_is_refused_on_the_public_host_and_staff_token_on_a_tenant_host(
    client, unique
) -> None:
    tenant = make_tenant(f"a{unique}")
    _, tenant_token = make_member(tenant, f"m{unique}@example.com", role="owner")
    staff_token = make_token(make_user(f"s{unique}@example.com", staff=True), public_tenant())
    ops = client.get(
        "/ops/v1/tenants", HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {tenant_token}"
    )
    assert ops.status_code == 401
    assert me(client, f"a{unique}.localhost", staff_token)[0] == 401


def test_public_token_of_a_non_staff_user_is_refused(client, unique) -> None:
    token = make_token(make_user(f"n{unique}@example.com"), public_tenant())
    ops = client.get("/ops/v1/tenants", HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ops.status_code == 401


def test_last_used_at_is_kept(client, unique) -> None:
    tenant = make_tenant(f"a{unique}")
    user, token = make_member(tenant, f"m{unique}@example.com")
    assert ApiToken.objects.get(user=user).last_used_at is None
    me(client, f"a{unique}.localhost", token)
    assert ApiToken.objects.get(user=user).last_used_at is not None


@pytest.mark.parametrize(
    "token",
    ["tf_abcd\x00fghij_secret", "tf_ABCDEFGHIJ_secret", "tf_é123456789_x", "tf_" + "a" * 9000],
)
def test_a_malformed_token_is_a_401_problem(client, unique, token: str) -> None:
    make_tenant(f"a{unique}")
    response = client.get(
        "/api/v1/me", HTTP_HOST=f"a{unique}.localhost", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/problem+json"


def test_a_membership_in_another_tenant_does_not_let_a_token_in(client, unique) -> None:
    """The role is read with the token, for the request's tenant only."""
    tenant, other = make_tenant(f"a{unique}"), make_tenant(f"b{unique}")
    user, _ = make_member(other, f"m{unique}@example.com", role="owner")
    token = make_token(user, tenant)
    assert me(client, f"a{unique}.localhost", token)[0] == 401


def test_a_cold_token_is_checked_in_one_statement_and_stamped_in_another(unique, settings) -> None:
    """Token, user and role in one read (a new tenant's owner pays it on the first request),
    then the first use's last_used_at."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from control_plane.identity.authentication import authenticate_token
    from tenants.cache_epoch import current_epoch
    from tenants.identity import Role

    settings.CACHE_EPOCH_CHECK_SECONDS = 60  # the epoch's periodic read is not the token's
    tenant = make_tenant(f"a{unique}")
    _, token = make_member(tenant, f"m{unique}@example.com", role="viewer")
    current_epoch()
    with CaptureQueriesContext(connection) as queries:
        _, principal = authenticate_token(token, tenant=tenant)
    assert principal.role == Role.VIEWER
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2, statements
    assert statements[1].startswith("UPDATE"), statements
