"""Per-tenant and per-token rate limits by plan, on the real Redis: 429 problem+json with
Retry-After and the draft RateLimit headers, classes limited apart, overrides by an operator."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from control_plane.ratelimits import limiter
from control_plane.ratelimits.limiter import Limit
from tenants.models import Tenant
from tests.control_plane.ratelimits.support import limits_of_this_test
from tests.factories import make_member, make_tenant, make_token, make_user, public_tenant

pytestmark = pytest.mark.usefixtures("committed")

PLANS = {
    "free": {"reads": 4, "writes": 2, "imports": 1, "exports": 1},
    "standard": {"reads": 10, "writes": 5, "imports": 2, "exports": 2},
    "enterprise": {"reads": 100, "writes": 50, "imports": 10, "exports": 10},
}


@pytest.fixture(autouse=True)
def small_plans(unique: str) -> Iterator[None]:
    """Small quotas, and keys of this test only (a fresh test database reuses tenant ids)."""
    with limits_of_this_test(unique, PLANS, RATE_LIMIT_AUTH_FAILURES=30):
        yield


@pytest.fixture
def tenant(unique: str) -> Iterator[Tenant]:
    tenant = make_tenant(f"rl{unique}")
    yield tenant
    Tenant.objects.filter(pk=tenant.pk).delete()


def get(client: Client, tenant: Tenant, token: str, path: str = "/api/v1/me"):
    return client.get(
        path, HTTP_HOST=f"{tenant.slug}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_gcra_lets_a_burst_of_the_quota_in_then_refuses_and_charges_nothing_refused(
    unique: str,
) -> None:
    tenant_limit = Limit("tenant-reads", f"rl-test:{unique}:t", 3, 60)
    token_limit = Limit("token-reads", f"rl-test:{unique}:k", 2, 60)
    first = limiter.check([tenant_limit, token_limit])
    assert first.allowed
    assert [s.remaining for s in first.states] == [2, 1]
    assert limiter.check([tenant_limit, token_limit]).allowed
    refused = limiter.check([tenant_limit, token_limit])
    assert not refused.allowed
    assert 29 < refused.retry_after <= 30.1  # one token back every 60/2 s
    # The token's refusal took nothing from the tenant: another token still gets the last one.
    other = Limit("token-reads", f"rl-test:{unique}:k2", 2, 60)
    assert limiter.check([tenant_limit, other]).allowed
    assert not limiter.check([tenant_limit, other]).allowed


def test_the_limits_reply_keeps_reset_times_and_survives_a_quota_past_a_million_a_second(
    unique: str,
) -> None:
    """The script answers its numbers in one string: reset times in microseconds come back
    whole, and a quota whose interval rounds to 0 us (no division left to make sense of) is let
    in with numbers, not an error."""
    limit = Limit("tenant-reads", f"rl-test:{unique}:r", 4, 60)
    states = [limiter.check([limit]).states[0] for _ in range(3)]
    assert [s.remaining for s in states] == [3, 2, 1]
    assert [round(s.reset) for s in states] == [15, 30, 45]  # 60/4 s per request charged
    huge = limiter.check([Limit("tenant-reads", f"rl-test:{unique}:h", 10**9, 10)])
    assert huge.allowed
    assert huge.enforced
    assert huge.states[0].remaining >= 0


def test_a_token_over_its_share_gets_429_problem_with_retry_after_and_ratelimit_headers(
    tenant,
) -> None:
    _, token = make_member(tenant, f"a-{tenant.slug}@example.com")
    client = Client()
    answers = [get(client, tenant, token) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]  # standard reads 10, share 0.5
    ok, refused = answers[0], answers[-1]
    assert ok["RateLimit-Policy"] == '"tenant-reads";q=10;w=60, "token-reads";q=5;w=60'
    assert re.fullmatch(r'"token-reads";r=4;t=\d+', ok["RateLimit"])
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert refused.json()["limit"] == "token-reads"
    assert int(refused["Retry-After"]) in range(1, 13)
    assert refused["RateLimit"].startswith('"token-reads";r=0;')


def test_the_tenant_limit_holds_across_tokens_and_other_tenants_are_untouched(
    tenant, unique
) -> None:
    tokens = [make_member(tenant, f"t{i}-{tenant.slug}@example.com")[1] for i in range(3)]
    neighbour = make_tenant(f"nb{unique}")
    _, other = make_member(neighbour, f"n-{unique}@example.com")
    client = Client()
    try:
        statuses = [get(client, tenant, tokens[i % 3]).status_code for i in range(12)]
        assert statuses.count(200) == 10
        assert statuses[-2:] == [429, 429]
        assert get(client, tenant, tokens[0]).json()["limit"] == "tenant-reads"
        assert get(client, neighbour, other).status_code == 200
    finally:
        Tenant.objects.filter(pk=neighbour.pk).delete()


def test_reads_writes_and_exports_are_limited_apart(tenant) -> None:
    _, token = make_member(tenant, f"c-{tenant.slug}@example.com")
    client = Client()
    for _ in range(5):
        assert get(client, tenant, token).status_code == 200
    assert get(client, tenant, token).status_code == 429  # reads spent
    export = get(client, tenant, token, "/api/v1/tasks/export")
    assert export["RateLimit-Policy"].startswith('"tenant-exports";q=2;w=60')
    assert export.status_code != 429
    assert get(client, tenant, token, "/api/v1/tasks/export").status_code == 429  # share of 2 is 1


def test_an_operator_override_and_plan_change_apply_on_the_next_request(tenant, unique) -> None:
    _, token = make_member(tenant, f"o-{tenant.slug}@example.com")
    staff = make_user(f"ops-{unique}@example.com", staff=True)
    ops_token = make_token(staff, public_tenant())
    client = Client()
    assert get(client, tenant, token)["RateLimit-Policy"].startswith('"tenant-reads";q=10;')
    patched = client.patch(
        f"/ops/v1/tenants/{tenant.slug}",
        data={"plan": "enterprise", "rate_limits": {"reads": 40}},
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {ops_token}",
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["plan"] == "enterprise"
    assert patched.json()["rate_limits"] == {"reads": 40}
    answer = get(client, tenant, token)
    assert answer["RateLimit-Policy"] == '"tenant-reads";q=40;w=60, "token-reads";q=20;w=60'
    export = get(client, tenant, token, "/api/v1/tasks/export")
    assert export["RateLimit-Policy"].startswith('"tenant-exports";q=10;')

    refused = client.patch(
        f"/ops/v1/tenants/{tenant.slug}",
        data={"rate_limits": {"reads": 0, "bulk": 3}},
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {ops_token}",
    )
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/problem+json"
    assert "bulk" in refused.json()["detail"]


def test_limits_off_answers_without_headers(tenant) -> None:
    _, token = make_member(tenant, f"f-{tenant.slug}@example.com")
    client = Client()
    with override_settings(RATE_LIMITS_ENABLED=False):
        answers = [get(client, tenant, token) for _ in range(12)]
    assert {r.status_code for r in answers} == {200}
    assert "RateLimit" not in answers[0]


def test_failed_authentication_is_limited_per_address_before_the_token_is_looked_at(tenant) -> None:
    _, token = make_member(tenant, f"g-{tenant.slug}@example.com")
    client = Client(REMOTE_ADDR="203.0.113.9")
    with override_settings(RATE_LIMIT_AUTH_FAILURES=3):
        bad = [get(client, tenant, "tf_nope_" + "x" * 30).status_code for _ in range(4)]
        assert bad == [401, 401, 401, 429]
        # A valid but not yet cached token from the blocked address waits too...
        blocked = get(client, tenant, token)
        assert blocked.status_code == 429
        assert blocked.json()["limit"] == "auth-failures"
        assert int(blocked["Retry-After"]) >= 1
        # ...while another address is not affected.
        assert get(Client(REMOTE_ADDR="203.0.113.10"), tenant, token).status_code == 200
