"""Memberships and API tokens in the operators' admin: a token's secret is shown once, never stored."""

from __future__ import annotations

import pytest
from django.test import Client

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.tokens import parse_prefix, token_digest
from tests.control_plane.admin_support import HOST, TOKEN, reverse, run_action, texts
from tests.factories import make_tenant, make_token, make_user

pytestmark = pytest.mark.django_db


def test_token_add_shows_the_secret_once_and_stores_only_its_digest(
    operator: Client, unique: str
) -> None:
    tenant = make_tenant(f"t{unique}")
    user = make_user(f"dev-{unique}@example.com")
    response = operator.post(
        reverse("admin:control_plane_apitoken_add"),
        {
            "user": user.pk,
            "tenant": tenant.pk,
            "name": "ci",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        HTTP_HOST=HOST,
        follow=True,
    )
    assert response.status_code == 200
    match = TOKEN.search(response.content.decode())
    assert match is not None
    token = match.group(1)
    stored = ApiToken.objects.get(user=user, tenant=tenant)
    assert stored.name == "ci"
    assert stored.prefix == parse_prefix(token)
    assert stored.digest == token_digest(token)
    assert token not in {stored.name, stored.prefix, stored.digest}

    detail = operator.get(
        reverse("admin:control_plane_apitoken_change", args=[stored.pk]), HTTP_HOST=HOST
    ).content.decode()
    listing = operator.get(
        reverse("admin:control_plane_apitoken_changelist"), HTTP_HOST=HOST
    ).content.decode()
    for page in (detail, listing):
        assert token not in page
        assert stored.digest not in page
    assert stored.prefix in listing


def test_revoke_action_sets_revoked_at(operator: Client, unique: str) -> None:
    tenant = make_tenant(f"r{unique}")
    user = make_user(f"rev-{unique}@example.com")
    make_token(user, tenant, name="old")
    token = ApiToken.objects.get(user=user)
    assert token.is_usable()
    response = run_action(operator, "control_plane_apitoken", "revoke", token.pk)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert not token.is_usable()
    assert texts(response) == ["1 token(s) revoked."]


def test_memberships_list_with_user_tenant_and_role(operator: Client, unique: str) -> None:
    tenant = make_tenant(f"m{unique}")
    user = make_user(f"mem-{unique}@example.com")
    Membership.objects.create(user=user, tenant=tenant, role="member")
    response = operator.get(
        reverse("admin:control_plane_membership_changelist"),
        {"q": f"mem-{unique}"},
        HTTP_HOST=HOST,
    )
    assert response.context["cl"].result_count == 1
    assert f"m{unique}" in response.content.decode()
