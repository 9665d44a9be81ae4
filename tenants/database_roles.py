"""The two database roles: the app role serves requests, the owner role changes schemas.

Web and workers hold Django's default connection as the app role (DATABASE_URL). Code that must
run DDL (migrations, provisioning) asks for the owner here and never hands it to request code.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import environ
import psycopg
from django.conf import settings
from django.db import connections
from psycopg_pool import ConnectionPool


def app_role_name() -> str:
    return urlsplit(settings.DATABASE_URL).username or ""


def owner_role_name() -> str:
    return urlsplit(settings.MIGRATION_DATABASE_URL).username or ""


@functools.cache
def _owner_pool() -> ConnectionPool:
    """A small per-process pool: provisioning pays no connection set-up (several ms each).

    No prepared statements: after DDL psycopg drops them with an extra DEALLOCATE ALL round
    trip, and these connections run DDL most of the time. Each connection is checked as it is
    handed out (an empty query, one round trip, negligible beside DDL): after a server restart
    the pool replaces its dead connections instead of failing the next provisioning with them.
    """
    url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    return ConnectionPool(
        url,
        kwargs={"prepare_threshold": None},
        min_size=0,
        max_size=settings.OWNER_POOL_SIZE,
        reset=_reset,
        check=ConnectionPool.check_connection,
        timeout=settings.OWNER_POOL_TIMEOUT_SECONDS,
        name="owner",
        open=True,
    )


def _reset(conn: psycopg.Connection) -> None:
    """Each user gets the connection as the pool made it: the transaction characteristics a
    user set (psycopg keeps them on the connection) do not reach the next. A REPEATABLE READ
    left by one user made a spare refill (tenants.spares) count from a snapshot taken before
    it waited for the refill lock, and a spare taken concurrently fail to serialise."""
    conn.autocommit = False
    conn.isolation_level = None
    conn.read_only = None
    conn.deferrable = None


@contextmanager
def owner_connection(*, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A pooled psycopg connection as the owner role, for DDL.

    Like `psycopg.connect` as a context manager: committed on success, rolled back on error.
    Only transaction-local settings may be made on it (it goes back to the pool).
    """
    with _owner_pool().connection() as conn:
        conn.autocommit = autocommit
        try:
            yield conn
        finally:
            _count_use(conn)


_uses: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()


def _count_use(conn: psycopg.Connection) -> None:
    """After OWNER_POOL_RECYCLE_USES uses the pool closes the connection as it comes back and
    opens a new one in the background: the backend's catalog caches hold every schema it made
    or touched, and they only grow (a clone runs several times slower on a backend that has
    made a few hundred schemas). psycopg_pool only knows max_lifetime, a time, so the
    connection is marked expired the way the pool marks it (pinned psycopg-pool; the test
    tests/tenants/test_database_roles.py notices a change)."""
    limit = settings.OWNER_POOL_RECYCLE_USES
    uses = _uses.get(conn, 0) + 1
    _uses[conn] = uses
    if limit and uses >= limit:
        conn._expire_at = 0.0


def use_owner_role_for_django() -> None:
    """Point this process's Django connection at the owner role (management commands that migrate)."""
    owner = environ.Env.db_url_config(settings.MIGRATION_DATABASE_URL)
    connection = connections["default"]
    connection.close()
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        connection.settings_dict[key] = owner[key]
