"""Leases in Redis: proof that a live worker is running a piece of work right now.

A task takes the lease of what it works on (a fan-out lane, an import job, an onboarding) before
it starts, and a thread renews it every fifth of LEASE_S while the task runs, also during one long
statement. A SIGKILLed worker stops renewing and its lease expires after LEASE_S: whoever looks
(the fan-out's reaper, control_plane.worker.recovery) then knows the work has no live worker,
seconds after the death instead of the broker's visibility timeout (an hour). A second delivery
of work whose holder is alive finds the lease taken and returns at once.

A renewal takes the lease again if Redis lost it (a restart without persistence), so a live
holder keeps its work; watchers wait LEASE_S before believing a missing lease (recovery's
suspicion), which covers the gap.

Redis, not PostgreSQL: a lease must outlive a database restart, which tasks ride out by retrying,
so a database outage is never mistaken for a dead worker. This module never decides what to do
about a missing lease: its callers do.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

log = logging.getLogger(__name__)

LEASE_S = 5.0  # the default of settings.LEASE_SECONDS
HEARTBEAT_S = LEASE_S / 5  # a renewal every fifth of the lease: four may fail before it lapses
# Renew our own lease, or take it again when Redis lost it; 0 when another holder has it.
RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] or not holder then
  return redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) and 1 or 0
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def client(url: str | None = None) -> redis.Redis:
    """The Redis at `url` (default: settings.REDIS_URL), one client per URL and process."""
    return _client(url or str(settings.REDIS_URL))


def lease_seconds() -> float:
    return float(getattr(settings, "LEASE_SECONDS", LEASE_S))


def is_held(key: str, *, url: str | None = None) -> bool:
    return bool(client(url).exists(key))


def claim_once(key: str, *, seconds: float | None = None, url: str | None = None) -> bool:
    """True for one caller per `seconds` (default: a lease's length): who acts on a dead
    holder's work when several watchers run side by side."""
    ttl = int((seconds or lease_seconds()) * 1000)
    return bool(client(url).set(key, 1, nx=True, px=ttl))


@contextmanager
def lease(key: str, *, url: str | None = None, then_delete: str | None = None) -> Iterator[bool]:
    """Hold `key`'s lease for the block, renewed by a thread; yields False (and holds nothing)
    when a live task already holds it.

    `then_delete`: a key deleted right after the lease is asked for, whoever gets it, in the
    same round trip (a pipeline keeps the order: the lease is taken before the key goes).
    """
    seconds, token, redis_client = lease_seconds(), uuid.uuid4().hex, client(url)
    ttl, heartbeat = int(seconds * 1000), seconds / 5
    if then_delete is None:
        taken = redis_client.set(key, token, nx=True, px=ttl)
    else:
        pipe = redis_client.pipeline(transaction=False)
        pipe.set(key, token, nx=True, px=ttl)
        pipe.delete(then_delete)
        taken, deleted = pipe.execute(raise_on_error=False)
        if isinstance(deleted, redis.RedisError):
            log.warning("%s not deleted (%s); it expires", then_delete, deleted)
        if isinstance(taken, redis.RedisError):
            raise taken
    if not taken:
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(heartbeat):
            try:
                if not redis_client.eval(RENEW, 1, key, token, ttl):
                    log.warning("lease %s lost; another task may have taken over", key)
                    return
            except redis.RedisError:
                log.warning("lease %s not renewed (Redis)", key, exc_info=True)

    thread = threading.Thread(target=renew, name=f"lease-{key}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        try:
            redis_client.eval(RELEASE, 1, key, token)
        except redis.RedisError:
            log.warning("lease %s not released; it expires", key, exc_info=True)
