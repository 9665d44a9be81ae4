"""Redis commands a request sends on its hot path, packed once and written on a connection of
this thread: tenant resolution's read (MGET) and the rate limiter's script (EVALSHA).

redis-py's command path (execute_command: a pooled connection checked out and back with a
readiness poll of its socket, retry closures, its own metrics hooks, argument encoding, response
callbacks) costs more of a request's CPU than the bytes it sends. A command whose bytes do not
change from one request to the next (the limiter's, control_plane.ratelimits.prepaid) is packed
once and kept; the others are packed here in one join. The reply is parsed by redis-py's own
parser, on a connection redis-py made with the cache's options (timeouts, protocol, auth).

Each thread has its own connection per server (a request is one thread; gunicorn's gthread
workers run a few), made again after a fork or an error. It raises what redis-py raises, so the
callers' fail-open (the cache's breaker, control_plane.http.redis_cache) is unchanged; a
connection that failed is dropped, never reused half read.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from redis.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ResponseError

Arg = bytes | str | int


def pack(*args: Arg) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, int in decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Wire:
    """Packed commands to one Redis server, on a connection of the calling thread."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.connection_class = pool.connection_class
        self.connection_kwargs = dict(pool.connection_kwargs)
        self._local = threading.local()

    def _connection(self) -> AbstractConnection:
        connection: AbstractConnection | None = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid():
            connection = self._local.connection = self.connection_class(**self.connection_kwargs)
        return connection

    def call(self, command: bytes) -> Any:
        """Send one packed command and read its reply; a Redis error reply raises (as redis-py's
        ResponseError and its kinds, e.g. NoScriptError)."""
        connection = self._connection()
        try:
            connection.send_packed_command([command], check_health=False)  # type: ignore[list-item]
            return connection.read_response()
        except Exception as exc:
            if not isinstance(
                exc, ResponseError
            ):  # the connection may hold half a reply: never reuse it
                connection.disconnect()
                self._local.connection = None
            raise
