"""Read switches: the shape of the data a process reads during an evolution, and who reads which.

An evolution (control_plane.evolution) changes what the application reads in its switch phase
without a deploy: it sets a ReadSwitch row, and every process sees it within CACHE_S (until
then it reads the old shape, which the expand's sync trigger keeps correct). A process may be
pinned to one value by the setting `READ_SWITCH_PINS` ({"tasks.due": "due_date"}): that is a
process still running the old code path during a rolling deploy. Every process that reads a
switch reports which value it served, at most every REPORT_S, to Redis with a TTL (`served`),
so the contract gate can see whether any process still reads the old shape. Never decides a
value itself: the control plane does; never fails a request when Redis is down.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time

import redis
from django.conf import settings

from tenants.models import ReadSwitch

log = logging.getLogger(__name__)

CACHE_S = 1.0
REPORT_S = 5.0
SERVED_TTL_S = 30

_lock = threading.Lock()
_cache: dict[str, tuple[float, str | None]] = {}
_reported: dict[tuple[str, str], float] = {}


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        str(settings.REDIS_URL), socket_timeout=0.5, socket_connect_timeout=0.5
    )


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def value(name: str, default: str) -> str:
    """The value this process serves for `name` now (pinned, else the row, else `default`)."""
    pinned = getattr(settings, "READ_SWITCH_PINS", {}).get(name)
    current = pinned or _stored(name) or default
    report(name, current)
    return current


def set_value(name: str, new: str) -> None:
    """Set a switch (the control plane's evolutions); this process sees it at once."""
    ReadSwitch.objects.update_or_create(name=name, defaults={"value": new})
    with _lock:
        _cache.pop(name, None)


def stored(name: str) -> str | None:
    """The switch's row, uncached (None: never set)."""
    return ReadSwitch.objects.filter(name=name).values_list("value", flat=True).first()


def _stored(name: str) -> str | None:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(name)
    if hit is not None and now - hit[0] < CACHE_S:
        return hit[1]
    found = stored(name)
    with _lock:
        _cache[name] = (now, found)
    return found


def _served_key(name: str, served: str) -> str:
    return f"switch:{name}:{served}:{process_name()}"


def report(name: str, served: str) -> None:
    """Tell the platform this process serves `served` for `name` (at most every REPORT_S)."""
    now = time.monotonic()
    key = (name, served)
    if now - _reported.get(key, 0.0) < REPORT_S:
        return
    _reported[key] = now
    try:
        _redis().set(_served_key(name, served), 1, ex=SERVED_TTL_S)
    except redis.RedisError:
        log.warning("read switch %s: could not report %s", name, served, exc_info=True)


def served(name: str, served_value: str) -> list[str]:
    """Processes that served `served_value` for `name` in the last SERVED_TTL_S seconds."""
    prefix = f"switch:{name}:{served_value}:"
    keys = _redis().scan_iter(match=prefix + "*", count=1000)
    return sorted(k.decode()[len(prefix) :] for k in keys)
