"""Redis down or hung: requests keep working from the database, nothing stale is served after.

Each test runs its own redis-server (tests.processes.start_redis) as the cache and the broker,
and stops it for real: SIGSTOP (a hung server: connections open, nothing answered) or a
shutdown (connections refused). Measured in-process with Django's test client against the
test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.identity.models import ApiToken
from control_plane.imports.models import ImportJob
from tenants.models import Tenant, TenantStatus
from tests.factories import make_member, make_tenant, make_token, make_user, public_tenant
from tests.processes import start_redis, stop_process
from tests.round_trips import cache_reaches

COOLDOWN = 0.5


@dataclass
class PrivateRedis:
    process: subprocess.Popen[bytes]
    url: str
    stopped: bool = False

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False


def _use_broker(url: str) -> None:
    """Point this process's Celery app at `url`, dropping its pooled broker connections."""
    app: Any = celery_app
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


pytestmark = pytest.mark.usefixtures("committed")  # real commits: on_commit hooks run


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis as the cache and the broker of this process, for one test."""
    process, url = start_redis(tmp_path)
    caches = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    broker = celery_app.conf.broker_url
    _use_broker(url)
    private = PrivateRedis(process, url)
    try:
        with override_settings(
            CACHES=caches,
            REDIS_URL=url,
            CACHE_BREAKER_COOLDOWN_SECONDS=COOLDOWN,
            CACHE_EPOCH_CHECK_SECONDS=60,  # only the outage's own re-read, to show it
        ):
            yield private
    finally:
        if private.stopped:
            private.resume()
        stop_process(process)
        _use_broker(broker)


def timed_get(client: Client, host: str, token: str, path: str = "/api/v1/me") -> tuple[int, float]:
    started = time.perf_counter()
    response = client.get(path, HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, time.perf_counter() - started


@pytest.fixture
def member(unique: str) -> Iterator[tuple[Tenant, str, str]]:
    """A tenant row without storage: removed afterwards, or a fan-out over all tenants meets it."""
    tenant = make_tenant(f"r{unique}")
    _, token = make_member(tenant, f"m{unique}@example.com")
    yield tenant, f"r{unique}.localhost", token
    Tenant.objects.filter(pk=tenant.pk).delete()


def test_a_hung_redis_costs_one_short_timeout_then_none(
    redis: PrivateRedis, member, monkeypatch
) -> None:
    """The first request's Redis read times out and opens the breaker; while it is open no
    request reaches Redis at all (counted at the client, not timed: the machine may be loaded)."""
    from control_plane.http.redis_cache import Breaker

    _, host, token = member
    client = Client()
    assert timed_get(client, host, token)[0] == 200  # warm: resolution and principal cached
    trips: list[str] = []
    trip = Breaker.trip
    reached = cache_reaches(monkeypatch)  # a Redis client or the packed-command wire

    def counting_trip(self: Breaker, exc: BaseException) -> None:
        trips.append(type(exc).__name__)
        trip(self, exc)

    monkeypatch.setattr(Breaker, "trip", counting_trip)
    redis.pause()
    with override_settings(CACHE_BREAKER_COOLDOWN_SECONDS=60):
        first = timed_get(client, host, token)
        reached_by_first = len(reached)
        after = [timed_get(client, host, token) for _ in range(20)]
    assert first[0] == 200
    assert {status for status, _ in after} == {200}
    assert trips == ["TimeoutError"]  # one timeout opened the breaker
    assert reached_by_first >= 1
    assert len(reached) == reached_by_first  # the 20 after it never touched Redis


def test_redis_shut_down_serves_every_request_from_the_database(
    redis: PrivateRedis, member
) -> None:
    _, host, token = member
    client = Client()
    assert timed_get(client, host, token)[0] == 200
    stop_process(redis.process)
    statuses = [timed_get(client, host, token)[0] for _ in range(20)]
    assert statuses == [200] * 20


def test_a_revoke_while_redis_hangs_is_not_undone_by_its_old_entry(
    redis: PrivateRedis, member
) -> None:
    """The entry cached before the outage survives in Redis; the epoch moved, so it is never read."""
    tenant, host, token = member
    client = Client()
    assert timed_get(client, host, token)[0] == 200  # entry cached
    redis.pause()
    assert timed_get(client, host, token)[0] == 200  # from the database
    # A bulk revoke sends no signal (and no tombstone could reach Redis anyway).
    assert ApiToken.objects.filter(tenant=tenant).update(revoked_at=timezone.now()) == 1
    assert timed_get(client, host, token)[0] == 401  # breaker open: the database says revoked
    redis.resume()
    time.sleep(COOLDOWN + 0.1)
    assert timed_get(client, host, token)[0] == 401  # Redis back, its old entry not trusted


def test_a_suspend_while_redis_is_down_is_seen_when_it_returns(redis: PrivateRedis, member) -> None:
    tenant, host, token = member
    client = Client()
    assert timed_get(client, host, token)[0] == 200
    redis.pause()
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.SUSPENDED)
    assert timed_get(client, host, token)[0] == 403
    redis.resume()
    time.sleep(COOLDOWN + 0.1)
    assert timed_get(client, host, token)[0] == 403


def test_import_submission_with_the_broker_down_is_503_and_records_nothing(
    redis: PrivateRedis, member
) -> None:
    tenant, host, token = member
    client = Client()
    stop_process(redis.process)
    before = ImportJob.objects.filter(tenant=tenant).count()
    response = client.post(
        "/api/v1/imports",
        b"external_id,project,title\nE1,P1,One\n",
        content_type="text/csv",
        HTTP_HOST=host,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    assert ImportJob.objects.filter(tenant=tenant).count() == before


def test_a_job_whose_message_cannot_be_sent_is_withdrawn(redis: PrivateRedis, member) -> None:
    """The breaker had not seen the outage yet: the job is recorded, its send fails, it is undone."""
    tenant, host, token = member
    client = Client()
    stop_process(redis.process)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):  # the cache no longer says so
        response = client.post(
            "/api/v1/imports",
            b"external_id,project,title\nE1,P1,One\n",
            content_type="text/csv",
            HTTP_HOST=host,
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    assert response.status_code == 503, response.content
    assert ImportJob.objects.filter(tenant=tenant).count() == 0


def test_onboarding_with_the_broker_down_is_503_and_records_nothing(
    redis: PrivateRedis, unique: str
) -> None:
    staff = make_token(make_user(f"staff{unique}@example.com", staff=True), public_tenant())
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {staff}")
    assert client.get("/ops/v1/tenants").status_code == 200  # principal cached
    stop_process(redis.process)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.post(
            "/ops/v1/tenants",
            {
                "name": "B",
                "slug": f"b{unique}",
                "domain": f"b{unique}.localhost",
                "isolation": "rls",
                "owner_email": f"o{unique}@example.com",
            },
            content_type="application/json",
        )
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert not Tenant.objects.filter(slug=f"b{unique}").exists()
