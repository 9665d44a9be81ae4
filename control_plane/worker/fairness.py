"""Fair shares of a queue's workers: at most `cap` jobs of one owner (a tenant's imports, one
operator's onboardings) run at once; the owner's other jobs wait their turn without holding a
worker process, so another owner's job queued behind them starts as soon as a process is free.

Why a per-owner concurrency cap and not a queue per tenant: Celery workers consume a fixed list
of queues, so per-tenant queues need workers (or a router) that follow tenants as they come and
go, and thousands of tenants would mean thousands of queues polled by every worker. A cap keeps
the one `imports` queue and bounds what any one tenant can take: with N worker processes and a
cap of 1, a flood from one tenant occupies one process and the other N-1 serve everyone else.
It is not work-conserving (a lone tenant cannot use the idle processes beyond its cap); for
imports that costs little, as one tenant's imports upsert into the same tables and would contend
on their rows anyway.

How: a Redis sorted set per owner holds the running jobs (member: the job, score: the time its
lease ends), taken and released by Lua scripts, atomically. A job that finds its owner's slots
taken is sent again with a countdown (a fresh message: its retry budget for real failures is
untouched) and the worker process moves on. A job redelivered after its worker died finds its
own member still there and takes its slot back; a member whose job is no longer active (the
`still_active` callback asks the database) is dropped when it blocks someone, so a lost release
never starves an owner until its lease runs out. If Redis cannot be asked, the job runs (the
broker is that Redis: it is back if this message arrived).

A bounce must be cheap: a process bouncing a flooding owner's jobs is a process another owner's
job waits behind. So a task asks `must_wait` first, before its lease or anything else: one
read-only Lua call, answering "full" only while the owner's slots are held by other members and
no check of the holders against the database is due (at most one per owner per
FAIR_QUEUE_HOLDER_CHECK_SECONDS); then the job is sent again at once. And a job sent back again
and again waits longer each time (doubling from FAIR_QUEUE_RETRY_SECONDS up to
FAIR_QUEUE_MAX_RETRY_SECONDS), so a backlog of twenty costs a few bounces a second, not twenty.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.cache import cache

from control_plane.http.redis_cache import UNREACHABLE

logger = logging.getLogger(__name__)

LEASE_SECONDS = 6 * 3600  # longer than any job; a lost release is cleaned up by still_active

# KEYS[1]: the owner's set. ARGV: member, cap, lease seconds. 1: taken (or already held), 0: full.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('EXPIRE', KEYS[1], lease)
  return 1
end
return 0
"""


# KEYS[1]: the owner's set, KEYS[2]: its holder-check mark. ARGV: member, cap, check seconds.
# 1: wait (the slots are others' and no holder check is due), 0: go on to take a slot.
MUST_WAIT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') < tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], 1, 'NX', 'EX', tonumber(ARGV[3])) then return 0 end
return 1
"""
BOUNCES_HEADER = "fair_bounces"  # how many times this job was sent back (a message header)


def _client() -> Any:
    return cache._cache.get_client(write=True)  # type: ignore[attr-defined]


def _key(queue: str, owner: object) -> str:
    return f"{settings.RATE_LIMIT_KEY_PREFIX}:fair:{queue}:{owner}"


def must_wait(queue: str, owner: object, member: str, cap: int) -> bool:
    """True when `member` would find `owner`'s slots taken by others: send it again without
    taking its lease or a slot. False when it might run (or a holder check is due, which `take`
    does): go on as usual. Redis unreachable: False (take decides)."""
    if cap <= 0 or owner is None:
        return False
    key = _key(queue, owner)
    check_seconds = max(1, round(settings.FAIR_QUEUE_HOLDER_CHECK_SECONDS))
    try:
        waits = _client().eval(MUST_WAIT, 2, key, f"{key}:checked", member, cap, check_seconds)
        return bool(waits)
    except UNREACHABLE:
        return False


def take(
    queue: str,
    owner: object,
    member: str,
    cap: int,
    still_active: Callable[[Collection[str]], Collection[str]] | None = None,
) -> bool:
    """Take one of `owner`'s `cap` slots on `queue` for `member` (cap <= 0: no cap)."""
    if cap <= 0:
        return True
    key = _key(queue, owner)
    try:
        client = _client()
        if client.eval(TAKE, 1, key, member, cap, LEASE_SECONDS):
            return True
        if still_active is None:
            return False
        holders = {
            m.decode() if isinstance(m, bytes) else str(m) for m in client.zrange(key, 0, -1)
        }
        gone = holders - set(still_active(holders))
        if not gone:
            return False
        client.zrem(key, *gone)
        logger.warning(
            "fair queue %s: dropped finished holders %s of %s", queue, sorted(gone), owner
        )
        return bool(client.eval(TAKE, 1, key, member, cap, LEASE_SECONDS))
    except UNREACHABLE as exc:
        logger.warning("fair queue %s: Redis unreachable (%s); running without a slot", queue, exc)
        return True


def release(queue: str, owner: object, member: str) -> None:
    try:
        _client().zrem(_key(queue, owner), member)
    except UNREACHABLE as exc:  # the lease or still_active frees it later
        logger.warning("fair queue %s: could not release %s (%s)", queue, member, exc)


def holders(queue: str, owner: object) -> list[str]:
    """The members holding `owner`'s slots now (for tests and the admin)."""
    return sorted(m.decode() for m in _client().zrange(_key(queue, owner), 0, -1))


@contextmanager
def slot(
    queue: str,
    owner: object,
    member: str,
    cap: int,
    still_active: Callable[[Collection[str]], Collection[str]] | None = None,
) -> Iterator[bool]:
    """True (and the slot held until the block ends) or False: send the job again later."""
    taken = take(queue, owner, member, cap, still_active)
    try:
        yield taken
    finally:
        if taken and cap > 0:
            release(queue, owner, member)


def send_again(task: Any) -> float:
    """Queue the running task's message again after a jittered countdown (a fresh message, so
    its retries for real failures are untouched); the current message is then acknowledged.
    The countdown doubles with each bounce of the same job, up to FAIR_QUEUE_MAX_RETRY_SECONDS.
    Returns the countdown, for the recovery mark that vouches for the new message."""
    bounces = bounces_of(task)
    base = min(
        settings.FAIR_QUEUE_RETRY_SECONDS * 2 ** min(bounces, 16),
        max(settings.FAIR_QUEUE_MAX_RETRY_SECONDS, settings.FAIR_QUEUE_RETRY_SECONDS),
    )
    countdown = base * (1 + random.random() / 2)  # noqa: S311
    task.apply_async(
        args=task.request.args,
        kwargs=task.request.kwargs,
        countdown=countdown,
        headers={BOUNCES_HEADER: bounces + 1},
    )
    return countdown


def bounces_of(task: Any) -> int:
    """How many times the running task's job was sent back before this delivery."""
    value = getattr(task.request, BOUNCES_HEADER, None)
    if value is None:
        value = (getattr(task.request, "headers", None) or {}).get(BOUNCES_HEADER)
    return value if isinstance(value, int) else 0
