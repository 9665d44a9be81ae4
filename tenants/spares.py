"""Spare schemas: template clones made ahead of time, so onboarding renames instead of cloning.

Cloning writes the catalog rows of every table, index, trigger and policy of a schema; renaming
a ready clone writes one. Spares are made by a worker (after each onboarding and on a beat schedule) and only
a spare of the template's current revision is ever handed out: after a migration fan-out the
old ones are dropped and new ones cloned. Refills (and drops) are serialised by an advisory lock.

One refill message waits at a time (`refill_wanted`): a burst of onboardings would otherwise
queue one refill each, and every one of them holds a worker process while it waits for the
lock, in front of the onboardings that come next, to find the spares already made.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis
from django.conf import settings
from psycopg import IsolationLevel, sql
from psycopg.types.json import Jsonb

from tenants.cloning import (
    TEMPLATE_SCHEMA,
    clone_schema,
    fingerprint_of,
    fingerprint_sql,
    run_script,
)
from tenants.database_roles import app_role_name, owner_connection
from tenants.models import SpareSchema

SPARE_PREFIX = "t__spare_"  # slugs start with a letter, so no tenant schema looks like this
# Advisory lock in the two-int form (as tenants.binding's), first key naming its purpose.
SPARES_LOCK_SPACE = 7_410_002
# "A refill message is queued and has not started": in the broker's Redis, beside the message
# it vouches for (a broker that loses its messages loses the mark too). Expires after beat's
# refill interval, the bound for a message lost any other way.
REFILL_QUEUED_KEY = "spares:refill-queued"
REFILL_QUEUED_SECONDS = 60

logger = logging.getLogger(__name__)


@functools.cache
def _broker(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def refill_wanted() -> bool:
    """Whether the caller should send a refill message: False while one is queued and has not
    started (it will count the spare the caller just took); True when Redis cannot say."""
    try:
        marked = _broker(settings.CELERY_BROKER_URL).set(
            REFILL_QUEUED_KEY, 1, nx=True, ex=REFILL_QUEUED_SECONDS
        )
    except redis.RedisError:
        logger.warning("spare refill mark not set; sending a refill anyway", exc_info=True)
        return True
    return bool(marked)


def refill_starting() -> None:
    """A refill starts: a spare taken from now on asks for another one (call before counting)."""
    try:
        _broker(settings.CELERY_BROKER_URL).delete(REFILL_QUEUED_KEY)
    except redis.RedisError:
        logger.warning("spare refill mark not removed; it expires", exc_info=True)


def take_spare(conn: psycopg.Connection, target: str) -> dict[str, str] | None:
    """Rename a current spare to `target` in one transaction; None when there is none.

    One script does it all (claim the row, drop a leftover `target`, rename), so on an
    autocommit connection taking a spare is a single round trip; the spare's revisions come
    back through a transaction-local setting, gone when the transaction ends.
    """
    assert target.startswith("t_"), target
    script = sql.SQL(
        "DO $take$ DECLARE spare record; BEGIN"
        " DELETE FROM {t} WHERE id = (SELECT id FROM {t} WHERE fingerprint = {current}"
        "  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING name, revisions INTO spare;"
        " IF FOUND THEN"
        "  IF left(spare.name, length({prefix})) <> {prefix} THEN"
        "   RAISE EXCEPTION 'not a spare schema: %', spare.name; END IF;"
        "  EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', {target});"
        "  EXECUTE format('ALTER SCHEMA %I RENAME TO %I', spare.name, {target});"
        "  PERFORM set_config('tenants.taken_spare', spare.revisions::text, true);"
        " END IF; END $take$;"
        " SELECT current_setting('tenants.taken_spare', true)"
    ).format(
        t=sql.Identifier(SpareSchema._meta.db_table),
        current=sql.SQL(_current_fingerprint_sql(conn)),
        prefix=sql.Literal(SPARE_PREFIX),
        target=sql.Literal(target),
    )
    row = run_script(conn, script.as_bytes(conn)).fetchone()
    taken = row[0] if row else None
    return dict(json.loads(taken)) if taken else None


def _current_fingerprint_sql(conn: psycopg.Connection) -> str:
    return fingerprint_sql(conn, TEMPLATE_SCHEMA)


def refill_spares(count: int | None = None) -> int:
    """Drop spares of an old template revision and clone until `count` current ones wait.

    Serialised: refills run from every onboarding and from beat, and two that counted the ready
    spares at once both cloned the shortfall. Each runs in one READ COMMITTED transaction
    holding an advisory transaction lock (safe behind PgBouncer), so the next one counts what
    the last committed.
    """
    wanted = settings.SPARE_SCHEMAS if count is None else count
    made = 0
    with _serialised() as conn:
        current = conn.execute(sql.SQL("SELECT " + _current_fingerprint_sql(conn))).fetchone()
        assert current is not None
        _drop(conn, sql.SQL("fingerprint IS DISTINCT FROM %s"), (current[0],))
        ready = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE fingerprint = %s").format(_table()),
            (current[0],),
        ).fetchone()
        assert ready is not None
        for _ in range(max(0, wanted - ready[0])):
            name = f"{SPARE_PREFIX}{secrets.token_hex(6)}"
            revisions = clone_schema(conn, name, grant_to=app_role_name(), source=TEMPLATE_SCHEMA)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, fingerprint, revisions, created_at) VALUES (%s, %s, %s, now())"
                ).format(_table()),
                (name, fingerprint_of(revisions), Jsonb(revisions)),
            )
            made += 1
    return made


def drop_spares() -> int:
    """Drop every spare (their schemas and their rows), serialised with refills."""
    with _serialised() as conn:
        return _drop(conn, sql.SQL("true"), ())


@contextmanager
def _serialised() -> Iterator[psycopg.Connection]:
    """An owner transaction holding the refill lock until it ends, at READ COMMITTED whatever
    the connection or the server's default says: each statement after the lock must see what
    the lock's last holder committed. At REPEATABLE READ the lock statement itself takes the
    snapshot, before the wait, and a refill queued behind another cloned its spares again."""
    with owner_connection() as conn:
        conn.isolation_level = IsolationLevel.READ_COMMITTED  # in the BEGIN: no round trip
        with conn.transaction():
            _lock_spares(conn)
            yield conn


def _lock_spares(conn: psycopg.Connection) -> None:
    """The refill lock, held until the caller's transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SPARES_LOCK_SPACE,))


def _drop(conn: psycopg.Connection, which: sql.Composable, params: tuple[object, ...]) -> int:
    """Drop the spares `which` selects: their rows, then their schemas."""
    names = [
        row[0]
        for row in conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} RETURNING name").format(_table(), which), params
        )
    ]
    for name in names:
        assert name.startswith(SPARE_PREFIX), name
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    return len(names)


def _table() -> sql.Identifier:
    # Qualified: each clone leaves its own schema first on the transaction's search_path.
    return sql.Identifier("public", SpareSchema._meta.db_table)
