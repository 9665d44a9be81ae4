"""Django's Redis cache backend, pooled, with short timeouts and a circuit breaker.

Django builds a new redis.Redis for every cache operation, and redis-py fills a table of some
170 response callbacks in each: about a tenth of a millisecond of CPU per GET, twice on every API
request (tenant resolution, principal). A client is thread-safe and only wraps its pool.

Redis holds caches only, so it must never take a request down: an unreachable or hung server
fails an operation within the socket timeouts (settings CACHES OPTIONS), and then the breaker
stays open for CACHE_BREAKER_COOLDOWN_SECONDS, in which every read is a miss and every write is
skipped without touching the network; the callers read the database instead. After the
cool-down the next operation pings Redis and still answers as a miss: `recoveries` has moved by
then, so the cache epoch (tenants.cache_epoch) is read again before any entry is trusted, and an
entry written before the outage is never read under an epoch that changed during it.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from control_plane.http.redis_wire import Wire

logger = logging.getLogger(__name__)

# Only failures to reach the server open the breaker; anything else is a bug and raises.
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Breaker:
    """One per Redis location and process, shared by the threads' cache instances."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open_until = 0.0
        self.tripped = False
        self.recoveries = 0

    def may_probe(self) -> bool:
        return time.monotonic() >= self.open_until

    def trip(self, exc: BaseException) -> None:
        with self.lock:
            if not self.tripped:
                logger.warning("Redis cache unreachable (%s); reading the database", exc)
            self.tripped = True
            self.open_until = time.monotonic() + settings.CACHE_BREAKER_COOLDOWN_SECONDS

    def recover(self) -> None:
        with self.lock:
            if self.tripped:
                self.tripped = False
                self.recoveries += 1
                logger.warning("Redis cache reachable again")


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(location: str) -> Breaker:
    with _breakers_lock:
        return _breakers.setdefault(location, Breaker())


class PooledClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}
        self._wires: dict[int, Wire] = {}

    def get_wire(self) -> Wire:
        pool = self._get_connection_pool(True)  # type: ignore[attr-defined]
        wire = self._wires.get(id(pool))
        if wire is None:
            wire = self._wires[id(pool)] = Wire(pool)
        return wire

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # _get_connection_pool and _client are Django's own, absent from its type stubs.
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class PooledClientRedisCache(RedisCache):
    """The cache the platform uses; reads as empty and drops writes while Redis is unreachable."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = PooledClientRedisCacheClient
        self.breaker = breaker_for(str(server))

    @property
    def recoveries(self) -> int:
        return self.breaker.recoveries

    def client(self) -> Any:
        """The pooled redis-py client, for what the cache API cannot say in one round trip
        (control_plane.ratelimits.prepaid); its keys go through make_key, its values through
        `loads`."""
        return self._cache.get_client(write=True)  # type: ignore[attr-defined]

    def wire(self) -> Wire:
        """Packed commands on a connection of this thread (control_plane.http.redis_wire): the
        hot path's read and the rate limiter's script; keys through make_key, as client()'s."""
        return self._cache.get_wire()  # type: ignore[attr-defined]

    def loads(self, raw: bytes) -> Any:
        """A value as the cache stored it, decoded as get() would. Django's serializer stores an
        int as its digits and anything else pickled, and tries int() first; a pickle (protocol
        2 or later, opening with PROTO) is unpickled at once, without that ValueError."""
        if raw[:1] == b"\x80":
            return pickle.loads(raw)  # noqa: S301 (our own cache, as Django's serializer does)
        return self._cache._serializer.loads(raw)  # type: ignore[attr-defined]

    def guarded(self, fallback: Any, operation: Any, *args: Any, **kwargs: Any) -> Any:
        """`operation` (which talks to this cache's Redis) under the cache's breaker: while it
        is open, or when Redis cannot be reached, `fallback` (a miss), as every cache read."""
        return self._guarded(fallback, operation, *args, **kwargs)

    def _guarded(self, fallback: Any, operation: Any, *args: Any, **kwargs: Any) -> Any:
        breaker = self.breaker
        try:
            if breaker.tripped:
                if breaker.may_probe():
                    self._cache.get_client(write=True).ping()  # type: ignore[attr-defined]
                    breaker.recover()
                return fallback  # the caller's key may carry an epoch read before the recovery
            return operation(*args, **kwargs)
        except UNREACHABLE as exc:
            breaker.trip(exc)
            return fallback

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._guarded(default, super().get, key, default, version)

    def get_many(self, keys: Any, version: Any = None) -> Any:
        return self._guarded({}, super().get_many, keys, version)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        return self._guarded(False, super().add, key, value, timeout, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        return self._guarded(None, super().set, key, value, timeout, version)

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        return self._guarded(list(data), super().set_many, data, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        return self._guarded(False, super().touch, key, timeout, version)

    def delete(self, key: Any, version: Any = None) -> Any:
        return self._guarded(False, super().delete, key, version)

    def delete_many(self, keys: Any, version: Any = None) -> Any:
        return self._guarded(None, super().delete_many, keys, version)

    def has_key(self, key: Any, version: Any = None) -> Any:
        return self._guarded(False, super().has_key, key, version)
