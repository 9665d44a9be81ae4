"""The plan limits checked before dispatch (control_plane.ratelimits.early) and the refusal memo
(control_plane.ratelimits.memo), on the real Redis: a warm token's 429 is problem+json with
Retry-After and the RateLimit headers, answered without authentication or a view; a client
being refused is refused again without asking Redis, never past the moment the limiter would let
it in; one tenant's refusals never touch another's."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from rest_framework.response import Response

from control_plane.ratelimits import early, limiter
from control_plane.ratelimits.limiter import Decision, Limit, LimitState
from control_plane.ratelimits.memo import REFUSALS, RefusalMemo
from tenants.cache_epoch import forget_view
from tenants.models import Tenant
from tests.control_plane.ratelimits.support import limits_of_this_test
from tests.factories import make_member, make_tenant

pytestmark = pytest.mark.usefixtures("committed")

PLANS = {
    plan: {"reads": 10, "writes": 5, "imports": 2, "exports": 2}
    for plan in ("free", "standard", "enterprise")
}


@pytest.fixture(autouse=True)
def small_plans(unique: str) -> Iterator[None]:
    """Small quotas, keys of this test only, and an empty memo before and after."""
    with limits_of_this_test(unique, PLANS):
        yield


@pytest.fixture
def tenant(unique: str) -> Iterator[Tenant]:
    tenant = make_tenant(f"er{unique}")
    yield tenant
    Tenant.objects.filter(pk=tenant.pk).delete()


@pytest.fixture
def redis_checks(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Every plan-limit decision asked of Redis, by any layer: the early check or the throttle
    (limiter.check), or tenant resolution's round trip (limiter.read_and_check with reads, the
    prepaid charge). The real limiter, counted; a cold token's failed-authentication check is
    not a plan limit."""
    asked: list[Decision] = []
    real: Callable[..., Decision] = limiter.check
    real_read: Callable[..., tuple[Any, Decision | None]] = limiter.read_and_check

    def counted(limits: list[Limit], **kwargs: Any) -> Decision:
        decision = real(limits, **kwargs)
        if all(limit.name != "auth-failures" for limit in limits):
            asked.append(decision)
        return decision

    def counted_read(wire: Any, reads: int, *args: Any, **kwargs: Any) -> Any:
        values, decision = real_read(wire, reads, *args, **kwargs)
        if reads and decision is not None:
            asked.append(decision)
        return values, decision

    monkeypatch.setattr(early.limiter, "check", counted)
    monkeypatch.setattr(early.limiter, "read_and_check", counted_read)
    return asked


def get(client: Client, tenant: Tenant, token: str, path: str = "/api/v1/me") -> Any:
    return client.get(
        path, HTTP_HOST=f"{tenant.slug}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_a_warm_tokens_429_is_problem_json_with_retry_after_answered_before_any_view(
    tenant: Tenant, redis_checks: list[Decision]
) -> None:
    _, token = make_member(tenant, f"a-{tenant.slug}@example.com")
    client = Client()
    first = get(client, tenant, token)  # cold: authenticated, then charged by DRF's throttle
    assert first.status_code == 200
    assert len(redis_checks) == 1
    answers = [get(client, tenant, token) for _ in range(5)]
    # Standard reads 10, a token's share 5: charged once each, whichever layer charged it.
    assert [r.status_code for r in answers] == [200] * 4 + [429]
    assert len(redis_checks) == 6
    refused = answers[-1]
    assert not isinstance(refused, Response)  # no DRF view answered it
    assert refused["Content-Type"] == "application/problem+json"
    body = refused.json()
    assert body["status"] == 429
    assert body["title"] == "Too many requests"
    assert body["limit"] == "token-reads"
    assert int(refused["Retry-After"]) in range(1, 13)  # one request back every 12 s
    assert refused["RateLimit-Policy"] == '"tenant-reads";q=10;w=60, "token-reads";q=5;w=60'
    assert re.fullmatch(r'"token-reads";r=0;t=\d+', refused["RateLimit"])
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", refused["X-Request-ID"])
    assert refused["TaskFlow-Version"]


def test_a_refused_client_is_refused_again_without_asking_redis(
    tenant: Tenant, redis_checks: list[Decision]
) -> None:
    _, token = make_member(tenant, f"b-{tenant.slug}@example.com")
    client = Client()
    # The epoch the member's rows moved, read once: were it read again mid-test, the token
    # would be cold once more, and DRF's throttle (which keeps no memo) would ask Redis.
    forget_view()
    with override_settings(CACHE_EPOCH_CHECK_SECONDS=3600):
        statuses = [get(client, tenant, token).status_code for _ in range(9)]
    assert statuses == [200] * 5 + [429] * 4
    # The first 429 asked Redis; the next three did not.
    assert [d.allowed for d in redis_checks] == [True] * 5 + [False]
    with override_settings(CACHE_EPOCH_CHECK_SECONDS=3600):
        again = get(client, tenant, token)
    assert again.status_code == 429
    assert again.json()["limit"] == "token-reads"
    assert 1 <= int(again["Retry-After"]) <= 12
    assert again["RateLimit"].startswith('"token-reads";r=0;')
    assert len(redis_checks) == 6


def test_one_tenants_refusals_never_refuse_another_tenant_or_token(
    tenant: Tenant, unique: str, redis_checks: list[Decision]
) -> None:
    _, flooder = make_member(tenant, f"c-{tenant.slug}@example.com")
    _, colleague = make_member(tenant, f"d-{tenant.slug}@example.com")
    neighbour = make_tenant(f"en{unique}")
    _, other = make_member(neighbour, f"n-{unique}@example.com")
    client = Client()
    try:
        assert [get(client, tenant, flooder).status_code for _ in range(7)][-2:] == [429, 429]
        assert len(REFUSALS) == 1
        # The same tenant's other token has its own share, and the tenant's limit is not spent.
        assert get(client, tenant, colleague).status_code == 200
        assert get(client, tenant, colleague).status_code == 200
        # Another tenant, whose ids and plan look the same, is limited apart.
        served = [get(client, neighbour, other) for _ in range(5)]
        assert [r.status_code for r in served] == [200] * 5
        assert re.fullmatch(r'"token-reads";r=0;t=\d+', served[-1]["RateLimit"])
        assert get(client, tenant, flooder).status_code == 429
        assert len(REFUSALS) == 1
    finally:
        Tenant.objects.filter(pk=neighbour.pk).delete()


def test_requests_not_checked_early_are_charged_by_the_throttle_once(tenant: Tenant) -> None:
    """A cold token and a view outside the throttle go past the early layer untouched."""
    _, token = make_member(tenant, f"e-{tenant.slug}@example.com")
    client = Client()
    with override_settings(RATE_LIMIT_TOKEN_SHARE=1.0):
        first = get(client, tenant, token)  # one charge, by the throttle
        assert re.fullmatch(r'"(tenant|token)-reads";r=9;t=\d+', first["RateLimit"])
        second = get(client, tenant, token)  # one charge, by the early layer
        assert re.fullmatch(r'"(tenant|token)-reads";r=8;t=\d+', second["RateLimit"])
    root = get(client, tenant, token, "/api/v1/")  # a plain view: not limited by plan
    assert root.status_code == 200
    assert "RateLimit" not in root


def test_the_memo_never_refuses_what_the_limiter_would_let_in(unique: str) -> None:
    """Sampled across a whole refusal: whenever the memo still refuses after a check returned,
    Redis (whose clock read came before that moment) refused that check too."""
    limits = [Limit("tenant-reads", f"rl-{unique}:memo", 2, 1)]  # one back every 0.5 s
    memo = RefusalMemo()
    while True:
        asked_at = time.monotonic()
        decision = limiter.check(limits)
        if not decision.allowed:
            break
    memo.remember(limits, decision, asked_at)
    samples = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        would = limiter.check(limits, commit=False)
        after = time.monotonic()
        if memo.refusal(limits, now=after) is None:
            break
        assert not would.allowed, "the memo refused a request the limiter let in"
        samples += 1
    assert samples > 0
    assert memo.refusal(limits) is None
    deadline = time.monotonic() + 30  # and the limiter lets it in within moments
    while not limiter.check(limits, commit=False).allowed:
        assert time.monotonic() < deadline


def refusal(limit: Limit, retry_after: float, reset: float) -> Decision:
    return Decision(False, retry_after, (LimitState(limit, 0, reset),))


def test_a_memo_entry_ends_at_asked_at_plus_the_exact_retry_after() -> None:
    limit = Limit("token-reads", "rl-unit:k", 5, 60)
    memo = RefusalMemo()
    memo.remember([limit], refusal(limit, 11.25, 60.0), asked_at=100.0)
    standing = memo.refusal([limit], now=111.0)
    assert standing is not None
    assert standing.retry_after == pytest.approx(0.25)
    assert limiter.retry_after_seconds(standing) == 1  # the header rounds up; the memo does not
    assert standing.states[0].reset == pytest.approx(49.0)
    assert memo.refusal([limit], now=111.25) is None
    assert len(memo) == 0
    # Another quota for the same key (an operator's override) is another entry.
    memo.remember([limit], refusal(limit, 5.0, 60.0), asked_at=200.0)
    raised = Limit("token-reads", "rl-unit:k", 50, 60)
    assert memo.refusal([raised], now=201.0) is None


def test_the_memo_keeps_no_allowed_or_unenforced_decision_and_stays_bounded() -> None:
    limit = Limit("tenant-reads", "rl-unit:t", 5, 60)
    memo = RefusalMemo(max_entries=3)
    memo.remember([limit], Decision(True, 0.0, ()), asked_at=0.0)
    memo.remember([limit], Decision(False, 3.0, (), enforced=False), asked_at=0.0)
    assert len(memo) == 0
    now = time.monotonic()
    limits = [Limit("tenant-reads", f"rl-unit:{i}", 5, 60) for i in range(5)]
    for i, each in enumerate(limits):
        memo.remember([each], refusal(each, 30.0 if i else 0.001, 30.0), asked_at=now - 0.5)
    assert len(memo) == 3
    assert memo.refusal([limits[-1]]) is not None
