"""Rate limits when Redis is hung (SIGSTOP) or gone (shut down): requests go on unlimited, within
the cache's short timeout, never a 500, and the fail-open count says so. A private redis-server
each (tests.control_plane.http.test_redis_outage's fixture)."""

from __future__ import annotations

import time

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from tests.control_plane.http.test_redis_outage import PrivateRedis, member, redis
from tests.processes import stop_process
from tests.round_trips import cache_reaches

__all__ = ["member", "redis"]  # fixtures

pytestmark = pytest.mark.usefixtures("committed")
TINY = {
    plan: {"reads": 2, "writes": 2, "imports": 1, "exports": 1}
    for plan in ("free", "standard", "enterprise")
}


def _gets(client: Client, host: str, token: str, count: int) -> list[tuple[int, float]]:
    answers = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get("/api/v1/me", HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {token}")
        answers.append((response.status_code, time.perf_counter() - started))
    return answers


def _failed_open() -> float:
    """This process's count of limit checks that let a request in unchecked (any reason)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "taskflow_rate_limit_fail_open"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize("outage", ["hung", "shut down"])
def test_limits_fail_open_fast_when_redis_is_away(
    redis: PrivateRedis, member, outage: str, unique: str, monkeypatch
) -> None:
    _, host, token = member
    client = Client()
    with override_settings(
        RATE_LIMIT_PLANS=TINY, RATE_LIMIT_KEY_PREFIX=f"rl-{unique}", RATE_LIMIT_WINDOW_SECONDS=60
    ):
        assert [status for status, _ in _gets(client, host, token, 2)] == [
            200,
            429,
        ]  # token share: 1
        before = _failed_open()
        reached = cache_reaches(monkeypatch)
        if outage == "hung":
            redis.pause()
        else:
            stop_process(redis.process)
        with override_settings(CACHE_BREAKER_COOLDOWN_SECONDS=60):
            answers = _gets(client, host, token, 1)
            reached_by_first = len(reached)
            answers += _gets(client, host, token, 19)
    assert {status for status, _ in answers} == {200}  # unlimited, never 500
    assert _failed_open() - before >= 20  # each request counted (its address check too)
    # The first request's failure opens the breaker; then no request reaches Redis at all
    # (counted at the client, not timed: the machine may be loaded).
    assert reached_by_first >= 1
    assert len(reached) == reached_by_first
