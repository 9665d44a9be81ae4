"""The principal cache: a warm token costs no query, and every change that affects a token's
authentication shows on the very next request (real Redis, real PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from control_plane.identity.authentication import authenticate_token
from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.principals import (
    CachedPrincipal,
    cached_principal,
    forget_principals,
    remember_principal,
)
from control_plane.identity.tokens import token_digest
from tenants.cache_epoch import current_epoch
from tenants.identity import Principal, Role
from tests.factories import make_member, make_tenant, make_token, make_user, public_tenant
from tests.round_trips import redis_round_trips

pytestmark = pytest.mark.django_db


def me(client: Client, host: str, token: str) -> tuple[int, dict]:
    response = client.get("/api/v1/me", HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, response.json()


@pytest.fixture
def member(unique: str) -> tuple[str, User, str]:
    """(host, user, token) of a viewer whose principal is cached by one request."""
    tenant = make_tenant(f"p{unique}")
    user, token = make_member(tenant, f"m{unique}@example.com", role="viewer")
    host = f"p{unique}.localhost"
    assert me(Client(), host, token)[0] == 200
    assert cached_principal(token_digest(token), current_epoch()) is not None
    # The request left this process's connection on the tenant (django-tenants).
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    return host, user, token


def test_a_warm_token_authenticates_without_a_query(member, settings) -> None:
    settings.CACHE_EPOCH_CHECK_SECONDS = 60  # the epoch's once-a-second read is not the token's
    _, user, token = member
    tenant = user.memberships.get().tenant
    with CaptureQueriesContext(connection) as queries:
        found, principal = authenticate_token(token, tenant=tenant)
        auth_user: Any = found
        assert auth_user
        assert auth_user.is_authenticated
        assert auth_user.pk == user.pk
    assert len(queries) == 0
    assert principal == Principal(
        user_id=user.pk,
        tenant_id=tenant.pk,
        role=Role.VIEWER,
        token_id=ApiToken.objects.get(user=user).pk,
    )
    assert auth_user.email == user.email  # reading more than the id loads the user
    assert isinstance(auth_user, User)


def test_a_cached_token_is_refused_on_another_tenants_host(member, unique) -> None:
    _, _, token = member
    make_tenant(f"o{unique}")
    assert me(Client(), f"o{unique}.localhost", token)[0] == 401


def test_revoking_a_token_refuses_the_next_request(member) -> None:
    host, user, token = member
    stored = ApiToken.objects.get(user=user)
    stored.revoked_at = timezone.now()
    stored.save()
    assert me(Client(), host, token)[0] == 401


def test_revoking_in_the_admin_refuses_the_next_request(member, unique) -> None:
    host, user, token = member
    operator = Client()
    operator.force_login(User.objects.create_superuser(f"op_{unique}", f"op{unique}@x.org", "-"))
    stored = ApiToken.objects.get(user=user)
    response = operator.post(
        reverse("admin:control_plane_apitoken_changelist", urlconf=settings.PUBLIC_SCHEMA_URLCONF),
        {"action": "revoke", "_selected_action": [str(stored.pk)]},
        HTTP_HOST="localhost",
    )
    assert response.status_code == 302
    assert me(Client(), host, token)[0] == 401


def test_deleting_a_token_refuses_the_next_request(member) -> None:
    host, user, token = member
    ApiToken.objects.get(user=user).delete()
    assert me(Client(), host, token)[0] == 401


def test_a_role_change_takes_effect_on_the_next_request(member) -> None:
    host, user, token = member
    membership = Membership.objects.get(user=user)
    membership.role = Role.ADMIN
    membership.save()
    status, body = me(Client(), host, token)
    assert (status, body["role"]) == (200, "admin")


def test_removing_the_membership_refuses_the_next_request(member) -> None:
    host, user, token = member
    Membership.objects.get(user=user).delete()
    assert me(Client(), host, token)[0] == 401


def test_deactivating_the_user_refuses_the_next_request(member) -> None:
    host, user, token = member
    user.is_active = False
    user.save()
    assert me(Client(), host, token)[0] == 401


def test_a_staff_user_losing_staff_is_refused_on_the_next_operator_request(unique) -> None:
    user = make_user(f"s{unique}@example.com", staff=True)
    token = make_token(user, public_tenant())
    client = Client()

    def ops() -> int:
        return client.get(
            "/ops/v1/tenants", HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
        ).status_code

    assert ops() == 200
    assert cached_principal(token_digest(token), current_epoch()) is not None
    user.is_staff = False
    user.save()
    assert ops() == 401


def test_changing_the_tenant_forgets_its_tokens(member) -> None:
    _, user, token = member
    tenant = user.memberships.get().tenant
    tenant.name = "Renamed"
    tenant.save()
    assert cached_principal(token_digest(token), current_epoch()) is None


def test_suspending_the_tenant_refuses_cached_tokens(member) -> None:
    from control_plane.tenancy.lifecycle import set_tenant_status

    host, user, token = member
    tenant = user.memberships.get().tenant
    set_tenant_status(tenant, "suspended")
    assert me(Client(), host, token)[0] == 403
    set_tenant_status(tenant, "active")
    assert me(Client(), host, token)[0] == 200


def test_expiry_is_checked_on_a_cache_hit(unique) -> None:
    tenant = make_tenant(f"e{unique}")
    user, token = make_member(tenant, f"m{unique}@example.com")
    stored = ApiToken.objects.get(user=user)
    now = timezone.now()
    principal = Principal(user.pk, tenant.pk, Role.MEMBER, stored.pk)
    # An entry written a minute ago for a token that expired a second ago, still in Redis.
    entry = CachedPrincipal(principal, expires_at=now - timedelta(seconds=1))
    remember_principal(token_digest(token), entry, now - timedelta(minutes=1), current_epoch())
    assert cached_principal(token_digest(token), current_epoch()) == entry
    assert me(Client(), f"e{unique}.localhost", token)[0] == 401


def test_an_entry_read_before_a_change_is_not_cached_after_it(member) -> None:
    _, _, token = member
    digest = token_digest(token)
    stale = cached_principal(digest, current_epoch())
    assert stale is not None
    forget_principals([digest])  # what a revoke does
    # A slow request that read the old row:
    remember_principal(digest, stale, timezone.now(), current_epoch())
    assert cached_principal(digest, current_epoch()) is None


def test_last_used_at_is_written_at_most_once_a_minute(unique) -> None:
    tenant = make_tenant(f"l{unique}")
    user, token = make_member(tenant, f"m{unique}@example.com")
    client = Client()
    assert me(client, f"l{unique}.localhost", token)[0] == 200
    first = ApiToken.objects.get(user=user).last_used_at
    assert first is not None
    assert me(client, f"l{unique}.localhost", token)[0] == 200
    assert ApiToken.objects.get(user=user).last_used_at == first
    # Once the entry is gone (after a minute), the next request moves last_used_at again.
    ApiToken.objects.filter(user=user).update(last_used_at=first - timedelta(minutes=2))
    forget_principals([token_digest(token)])
    assert me(client, f"l{unique}.localhost", token)[0] == 200
    last_used_at = ApiToken.objects.get(user=user).last_used_at
    assert last_used_at is not None
    assert last_used_at > first


def test_a_bulk_revoke_stops_the_token_within_the_epoch_check(member, settings) -> None:
    """QuerySet.update() sends no signal; the epoch trigger moves, so the entry is left unread."""
    host, user, token = member
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    assert me(Client(), host, token)[0] == 401


def test_last_used_at_alone_does_not_move_the_epoch(member, settings) -> None:
    _, user, _ = member
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    before = current_epoch()
    ApiToken.objects.filter(user=user).update(last_used_at=timezone.now())
    assert current_epoch() == before


def test_a_warm_request_reads_its_tenant_and_principal_in_one_round_trip(member) -> None:
    """Tenant resolution reads the token's principal entry with the host's (one round trip), so
    authentication sends no read of its own. Counted at redis-py's connections: one round trip
    reads the cache (its plan limits may be charged in it, control_plane.ratelimits.prepaid, or
    in a round trip of their own, which reads no cache key)."""
    host, _, token = member
    for _ in range(2):
        with redis_round_trips() as trips:
            assert me(Client(), host, token)[0] == 200
        reads = [t for t in trips if b"tenant-host:" in t.sent or b"principal" in t.sent]
        assert len(reads) == 1, [t.commands for t in trips]
        assert b"principal:" in reads[0].sent
        assert b"tenant-host:" in reads[0].sent
        assert all(t.commands in {("MGET",), ("EVALSHA",)} for t in trips), trips


def test_the_principal_cache_refills_after_a_tenant_save(
    member, settings, django_capture_on_commit_callbacks
) -> None:
    """A tenant save forgets its tokens; once it has committed, the first request authenticates
    from the database and caches the principal, and the next one runs no auth query."""
    settings.CACHE_EPOCH_CHECK_SECONDS = 0  # the save's new epoch is seen at once
    host, user, token = member
    tenant = user.memberships.get().tenant
    with django_capture_on_commit_callbacks(execute=True):  # the save commits
        tenant.name = "Renamed"
        tenant.save()

    def auth_queries() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            assert me(Client(), host, token)[0] == 200
        return [q["sql"] for q in queries.captured_queries if "apitoken" in q["sql"]]

    assert auth_queries() != []  # forgotten: read again
    assert auth_queries() == []  # and cached again
