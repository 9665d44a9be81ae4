"""The word that an onboarding finished, from the worker to a request waiting for it.

`POST /ops/v1/tenants` with `Prefer: wait=N` answers once the tenant is active instead of at
once. The worker pushes the outcome onto a short-lived Redis list of the onboarding after it
commits; the waiting request blocks on that list (BRPOPLPUSH onto itself, so every waiter sees
the word and it stays for a late one) instead of polling the database. Nothing here decides
anything: a word lost (Redis down, a worker killed) only makes the waiter time out and answer
as without the preference; the database stays the truth.
"""

from __future__ import annotations

import functools
import logging

import redis

log = logging.getLogger(__name__)

# Longest wait a request may ask for: a waiting request holds a web thread.
MAX_WAIT_SECONDS = 10
# The word outlives any waiter.
KEEP_SECONDS = MAX_WAIT_SECONDS * 6


def _key(onboarding_id: int) -> str:
    return f"onboarding-finished:{onboarding_id}"


@functools.cache
def _client(url: str) -> redis.Redis:
    # Its own client: a blocking read holds the socket for up to MAX_WAIT_SECONDS.
    return redis.Redis.from_url(url, socket_timeout=MAX_WAIT_SECONDS + 5, socket_connect_timeout=2)


def _broker_url() -> str:
    from control_plane.celery import app

    return str(app.conf.broker_url)


def announce(onboarding_id: int, status: str) -> None:
    """Tell any waiter that the onboarding finished with `status` (call after the commit)."""
    try:
        pipe = _client(_broker_url()).pipeline(transaction=False)
        pipe.rpush(_key(onboarding_id), status)
        pipe.expire(_key(onboarding_id), KEEP_SECONDS)
        pipe.execute()
    except redis.RedisError:
        log.warning("onboarding %s: finish not announced; a waiter times out", onboarding_id)


def forget(onboarding_id: int) -> None:
    """Drop an earlier attempt's word (a retry starts over)."""
    try:
        _client(_broker_url()).delete(_key(onboarding_id))
    except redis.RedisError:
        log.warning("onboarding %s: an earlier finish not forgotten", onboarding_id)


def wait(onboarding_id: int, seconds: float) -> str | None:
    """The status the onboarding finished with, waiting up to `seconds`; None if not (yet)."""
    seconds = min(seconds, MAX_WAIT_SECONDS)
    if seconds <= 0:
        return None
    key = _key(onboarding_id)
    try:
        # Whole seconds (redis-py's type; Redis 6+ would take fractions), at least one.
        word = _client(_broker_url()).brpoplpush(key, key, timeout=max(1, round(seconds)))
    except redis.RedisError:
        log.warning("onboarding %s: cannot wait for its finish", onboarding_id, exc_info=True)
        return None
    return word.decode() if isinstance(word, bytes) else None
