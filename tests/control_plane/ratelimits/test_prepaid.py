"""A warm request's plan limits charged in tenant resolution's own round trip
(control_plane.ratelimits.prepaid), on the real Redis: one round trip in all, charged once, with
the limits of what the request resolved; never a charge for a method the route does not serve."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from control_plane.ratelimits.prepaid import LEARNED
from tenants.cache_epoch import forget_view
from tenants.models import Isolation, Tenant
from tests.control_plane.ratelimits.support import limits_of_this_test
from tests.factories import make_member, make_tenant
from tests.round_trips import redis_round_trips

pytestmark = pytest.mark.usefixtures("committed")

PLANS = {
    plan: {"reads": 100, "writes": 40, "imports": 2, "exports": 2}
    for plan in ("free", "standard", "enterprise")
}


@pytest.fixture(autouse=True)
def plans(unique: str) -> Iterator[None]:
    """Quotas no test reaches (token share 50 reads, 20 writes), keys of this test only."""
    with limits_of_this_test(unique, PLANS, window=3600):  # nothing comes back during a test
        yield


@pytest.fixture
def tenant(unique: str) -> Iterator[Tenant]:
    tenant = make_tenant(f"pp{unique}", isolation=Isolation.RLS)  # the shared schema's tables
    yield tenant
    Tenant.objects.filter(pk=tenant.pk).delete()


def send(
    client: Client, tenant: Tenant, token: str, method: str = "GET", path: str = "/api/v1/tasks"
) -> Any:
    return client.generic(
        method, path, HTTP_HOST=f"{tenant.slug}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def remaining(response: Any, name: str = "token-reads") -> int:
    found = re.fullmatch(rf'"{name}";r=(\d+);t=\d+', response["RateLimit"])
    assert found, response["RateLimit"]
    return int(found.group(1))


def test_a_warm_request_makes_one_redis_round_trip_that_reads_and_charges(
    tenant: Tenant, unique: str
) -> None:
    _, token = make_member(tenant, f"a-{unique}@example.com")
    client = Client()
    forget_view()  # the epoch the member's rows moved, read once: no key changes mid-test
    with override_settings(CACHE_EPOCH_CHECK_SECONDS=3600):
        # Cold (authenticated from the database), then its principal read for the first time.
        assert [send(client, tenant, token).status_code for _ in range(3)] == [200] * 3
        with redis_round_trips() as trips:
            response = send(client, tenant, token)
    assert response.status_code == 200
    assert len(trips) == 1, [t.commands for t in trips]
    (trip,) = trips
    assert trip.commands == ("EVALSHA",)
    for read in (
        b"tenant-host:",
        b"tenant-host-forgotten:",
        b"principal:",
        b"principal-forgotten:",
    ):
        assert read in trip.sent
    assert f"rl-{unique}:t:{tenant.pk}:reads".encode() in trip.sent  # and the tenant's limit
    # Charged once per request, whichever way: three before, this is the fourth of 50.
    assert remaining(response) == 46
    assert response["RateLimit-Policy"] == '"tenant-reads";q=100;w=3600, "token-reads";q=50;w=3600'


def test_a_request_charged_in_resolution_is_charged_by_nothing_else(
    tenant: Tenant, unique: str
) -> None:
    _, token = make_member(tenant, f"b-{unique}@example.com")
    client = Client()
    answers = [send(client, tenant, token) for _ in range(8)]
    assert [remaining(r) for r in answers] == list(range(49, 41, -1))
    writes = [send(client, tenant, token, "POST", "/api/v1/projects") for _ in range(3)]
    # Writes are limited apart from reads (a bad body is still a served request: 400).
    assert [remaining(r, "token-writes") for r in writes] == [19, 18, 17]
    assert remaining(send(client, tenant, token)) == 41


def test_an_operators_override_applies_from_the_next_request(tenant: Tenant, unique: str) -> None:
    """What this process expected (the plan's quota) is no longer what Redis holds once the
    tenant is saved: nothing is charged under the old limits, every request once under the new."""
    _, token = make_member(tenant, f"c-{unique}@example.com")
    client = Client()
    assert [remaining(send(client, tenant, token)) for _ in range(3)] == [49, 48, 47]
    tenant.rate_limits = {"reads": 20}
    tenant.save()
    after = [send(client, tenant, token) for _ in range(5)]
    assert {r["RateLimit-Policy"] for r in after} == {
        '"tenant-reads";q=20;w=3600, "token-reads";q=10;w=3600'
    }
    # The same keys: GCRA's one number (the theoretical arrival time) is 3 x 72 s on, less than
    # one request's 360 s under a quota of 10; then each request is charged once.
    assert [remaining(r) for r in after] == [8, 7, 6, 5, 4]


def test_the_first_requests_of_a_process_are_charged_once_too(tenant: Tenant, unique: str) -> None:
    """Nothing learned (a new process): nothing charged in the read, the early check charges."""
    _, token = make_member(tenant, f"d-{unique}@example.com")
    client = Client()
    assert remaining(send(client, tenant, token)) == 49
    assert remaining(send(client, tenant, token)) == 48
    LEARNED.clear()
    assert remaining(send(client, tenant, token)) == 47
    assert remaining(send(client, tenant, token)) == 46
    assert len(LEARNED) > 0


@pytest.mark.parametrize("warm", [True, False], ids=["warm token", "cold token"])
def test_a_method_the_route_does_not_serve_is_405_and_not_charged(
    tenant: Tenant, unique: str, warm: bool
) -> None:
    """DRF answers 405 without running a view: no quota is spent on it, by the early check,
    resolution's round trip or DRF's throttle, and no 429 hides the 405."""
    _, token = make_member(tenant, f"e-{unique}@example.com")
    client = Client()
    if warm:
        assert [remaining(send(client, tenant, token)) for _ in range(3)] == [49, 48, 47]
    refused = [send(client, tenant, token, "PUT", "/api/v1/tasks") for _ in range(25)]
    assert {r.status_code for r in refused} == {405}
    assert all("RateLimit" not in r for r in refused)
    # Not charged to writes (20 for the token: 25 would have been refused) nor to reads.
    assert remaining(send(client, tenant, token, "POST", "/api/v1/projects"), "token-writes") == 19
    assert remaining(send(client, tenant, token)) == (46 if warm else 49)


def test_a_write_the_role_may_not_make_is_charged(tenant: Tenant, unique: str) -> None:
    """The decision (control_plane.ratelimits.warm): a warm token's write is charged before its
    permissions are known, so a viewer's refused write (403) is charged like any request."""
    _, token = make_member(tenant, f"f-{unique}@example.com", role="viewer")
    client = Client()
    assert [send(client, tenant, token).status_code for _ in range(3)] == [200] * 3
    forbidden = [send(client, tenant, token, "POST", "/api/v1/projects") for _ in range(2)]
    assert [r.status_code for r in forbidden] == [403, 403]
    assert [remaining(r, "token-writes") for r in forbidden] == [19, 18]


def test_an_unknown_api_version_is_charged_once_a_token_is_warm(
    tenant: Tenant, unique: str
) -> None:
    """The documented edge (control_plane.ratelimits.prepaid): charged in resolution's round
    trip, the 400 of a version the API does not know stays charged, and says so."""
    _, token = make_member(tenant, f"g-{unique}@example.com")
    client = Client()
    assert [remaining(send(client, tenant, token)) for _ in range(3)] == [49, 48, 47]
    unknown = client.get(
        "/api/v1/tasks",
        HTTP_HOST=f"{tenant.slug}.localhost",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_TASKFLOW_VERSION="1999-01-01",
    )
    assert unknown.status_code == 400
    assert remaining(unknown) == 46
    assert remaining(send(client, tenant, token)) == 45


def test_a_changed_setting_forgets_what_was_learned(tenant: Tenant, unique: str) -> None:
    """What is charged in resolution's round trip follows from the settings too (quotas, window,
    key prefix): a request after they change is charged under the new ones, once."""
    _, token = make_member(tenant, f"h-{unique}@example.com")
    client = Client()
    assert [remaining(send(client, tenant, token)) for _ in range(3)] == [49, 48, 47]
    assert len(LEARNED) > 0
    other = {plan: {**quotas, "reads": 30} for plan, quotas in PLANS.items()}
    with override_settings(RATE_LIMIT_PLANS=other, RATE_LIMIT_KEY_PREFIX=f"rl2-{unique}"):
        after = [send(client, tenant, token) for _ in range(3)]
    assert {r["RateLimit-Policy"] for r in after} == {
        '"tenant-reads";q=30;w=3600, "token-reads";q=15;w=3600'
    }
    assert [remaining(r) for r in after] == [14, 13, 12]  # the new keys, charged once each


def test_a_learned_charge_is_one_packed_script_read_by_its_keys_method_and_path(
    tenant: Tenant, unique: str
) -> None:
    """Learned per (keys, method, path): the same path charged in the read, another path (its
    first request) charged by the early check, never twice."""
    _, token = make_member(tenant, f"i-{unique}@example.com")
    client = Client()
    forget_view()
    with override_settings(CACHE_EPOCH_CHECK_SECONDS=3600):
        assert [remaining(send(client, tenant, token)) for _ in range(3)] == [49, 48, 47]
        with redis_round_trips() as trips:
            first = send(client, tenant, token, path="/api/v1/projects")
            again = send(client, tenant, token, path="/api/v1/projects")
    assert [remaining(first), remaining(again)] == [46, 45]
    assert [t.commands for t in trips] == [("MGET",), ("EVALSHA",), ("EVALSHA",)]
