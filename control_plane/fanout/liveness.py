"""Liveness of batch lanes: a Redis lease per (run, batch) that the task holding it renews.

A batch task takes its lane's lease before it migrates anything and a thread renews it every
HEARTBEAT_S while the task runs (also during one long statement); a SIGKILLed worker stops
renewing and the lease expires after LEASE_S. The reaper (`reaper.reap_dead_lanes`, beat every
few seconds) sends a lane again when tenants are running in it and nobody holds its lease, so a
lost worker costs seconds, not the stuck-run reaper's minutes. The lease also makes a second
delivery of a lane whose holder is alive (the broker's redelivery after the visibility timeout,
a re-send) return at once instead of migrating the same tenants side by side.

Redis, not PostgreSQL: a lease must outlive a database restart, which the batch rides out by
retrying, so the reaper does not mistake a database outage for a dead worker. It never decides
what a batch migrates: batches and the orchestrator do.
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

HEARTBEAT_S = 1.0
PLATFORM_LANE = 0  # the lease of a run's template and shared stage (batch numbers start at 1)
LEASE_S = 5.0
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(str(settings.REDIS_URL), socket_timeout=2, socket_connect_timeout=2)


def lease_key(run_id: int, batch: int) -> str:
    return f"fanout:lane:{run_id}:{batch}"


def is_held(run_id: int, batch: int) -> bool:
    return bool(client().exists(lease_key(run_id, batch)))


def claim_resend(run_id: int, batch: int) -> bool:
    """True for one caller per LEASE_S: who re-sends a dead lane (reapers may run side by side)."""
    return bool(client().set(f"fanout:resent:{run_id}:{batch}", 1, nx=True, px=int(LEASE_S * 1000)))


@contextmanager
def lane_lease(run_id: int, batch: int) -> Iterator[bool]:
    """Hold the lane's lease for the block, renewed by a thread; yields False (and holds
    nothing) when a live task already holds it."""
    key, token = lease_key(run_id, batch), uuid.uuid4().hex
    ttl = int(LEASE_S * 1000)
    if not client().set(key, token, nx=True, px=ttl):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                if not client().eval(RENEW, 1, key, token, ttl):
                    log.warning("lane %s: lease lost; another task may have taken over", key)
                    return
            except redis.RedisError:
                log.warning("lane %s: lease not renewed (Redis)", key, exc_info=True)

    thread = threading.Thread(target=renew, name=f"lease-{key}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        try:
            client().eval(RELEASE, 1, key, token)
        except redis.RedisError:
            log.warning("lane %s: lease not released; it expires", key, exc_info=True)
