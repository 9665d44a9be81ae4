"""Binding a SQLAlchemy session to one tenant: the only way TaskFlow code reaches tenant data.

One engine per process (psycopg 3, pooled, app role). A bound session's connection maps the
placeholder schema `tenant` to the tenant's schema (schema mode) or to `shared` (rls mode) with
schema_translate_map, and every transaction begins with transaction-local settings of
app.tenant_id, app.actor_id and app.request_id (set_config(..., true) on one server; SET LOCAL on
a Citus coordinator, which passes only SET commands on to its workers: tenants.local_settings),
so a pooled connection never carries one tenant's identity into another's request (safe behind
PgBouncer in transaction mode). A list page's read (tenant_reads) is its own implicit
transaction: the settings and the query in one Query message, one round trip.
This module must never issue a session-level SET (the one session setting, the time zone UTC
every connection shares, is a startup option: connect_args).
"""

from __future__ import annotations

import functools
import re
import select
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from django.conf import settings
from sqlalchemy import event
from sqlalchemy.orm import Session

from tenants.citus import is_citus
from tenants.driver_reads import begin_with_prelude, end_prelude, prelude_each_read
from tenants.identity import principal_of
from tenants.local_settings import set_local
from tenants.models import Isolation, Tenant
from tenants.placement import PLACEHOLDER_SCHEMA, SHARED_SCHEMA
from tenants.problems import Problem

# A caller's X-Request-ID is kept (and recorded by history) only when it looks like an id.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Advisory locks in the two-int form, first key naming the lock's purpose; the tenant id second.
WRITE_LOCK_SPACE = 7_410_001
LOCK_NOT_AVAILABLE = "55P03"
# PostgreSQL rolled the transaction back to break a cycle of lock waits (a deadlock: a request
# that read a table and then writes it, against a migration or another writer taking the same
# tables in another order), or to keep serializable transactions apart. Nothing of it was written,
# and the same request sent again normally succeeds: a transient conflict, not a server fault.
TRANSACTION_ROLLED_BACK = frozenset({"40P01", "40001"})
_WRITE_LOCKED = "write_locked_in"
# A pooled connection idle longer than this is pinged at checkout (see _refuse_dead).
PING_AFTER_IDLE_SECONDS = 30.0
# The pool record's info key holding the tenant schemas a connection has served.
_SCHEMAS_SERVED = "schemas_served"
# The session's time zone, set when each connection starts (connect_args).
SESSION_OPTIONS = "-c TimeZone=UTC"
# set_config(..., true) is SET LOCAL on one server; on Citus see _bind_transaction.
BIND_TRANSACTION = (
    "SELECT set_config('app.tenant_id', %s, true), set_config('app.actor_id', %s, true),"
    " set_config('app.request_id', %s, true)"
)
WRITE_LOCK = sa.text(
    "SELECT set_config('lock_timeout', :timeout, true),"
    " pg_advisory_xact_lock_shared(:space, :tenant),"
    " set_config('lock_timeout', '0', true)"
)


class TenantBusy(Problem):
    status = 503
    title = "Tenant busy"


class ConcurrentChange(Problem):
    """The database broke a lock conflict by rolling this request's transaction back."""

    status = 503
    title = "Concurrent change"


@dataclass(frozen=True)
class TenantBinding:
    """What a session needs to know about its tenant and caller."""

    tenant_id: int
    schema: str
    actor_id: int | None = None
    request_id: str | None = None


def binding_for(
    tenant: Tenant, *, actor_id: int | None = None, request_id: str | None = None
) -> TenantBinding:
    schema = tenant.schema_name if tenant.isolation == Isolation.SCHEMA else SHARED_SCHEMA
    return TenantBinding(
        tenant_id=tenant.pk, schema=schema, actor_id=actor_id, request_id=request_id
    )


def tenant_of(request: object) -> Tenant:
    """The tenant a request was resolved to (tenants.middleware sets `request.tenant`)."""
    tenant = getattr(request, "tenant", None)
    if not isinstance(tenant, Tenant):
        raise TypeError("the request was not resolved to a tenant")
    return tenant


def request_id_of(request: Any) -> str:
    """The request's id: the one the outermost middleware gave it (and echoes), else the caller's
    X-Request-ID when well-formed, else a new one."""
    given = getattr(request, "request_id", None)
    if isinstance(given, str):
        return given
    # META, not headers: a headers lookup of an absent name raises and catches a KeyError inside
    supplied = request.META.get("HTTP_X_REQUEST_ID", "")
    return supplied if REQUEST_ID.match(supplied) else uuid.uuid4().hex


def request_binding(request: Any) -> TenantBinding:
    """The binding of an authenticated API request: its tenant, its caller, its request id."""
    return binding_for(
        tenant_of(request),
        actor_id=principal_of(request).user_id,
        request_id=request_id_of(request),
    )


@contextmanager
def bound_session(request: Any) -> Iterator[Session]:
    """A session bound to the request's tenant, caller and request id; one transaction."""
    with tenant_session(request_binding(request)) as session:
        yield session


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", url)


def connect_args(url: str) -> dict[str, Any]:
    """The driver's connection arguments for the engine at `url`.

    Every connection starts its session in UTC (a startup option, no round trip; PgBouncer
    1.20+ passes a tracked parameter such as TimeZone on, and an older one that ignores
    `options` leaves the server's default). UTC is the zone the API writes its times in; under
    any other name (a server whose default is `Etc/UTC`) psycopg gives each timestamptz a
    ZoneInfo, which costs a conversion where it loads the value and a call back into Python
    where orjson writes it: a list page's times cost more than its query's other columns.
    Options the URL names already are kept, the time zone after them."""
    given = sa.engine.make_url(url).query.get("options")
    given = given[-1] if isinstance(given, tuple) else given
    args: dict[str, Any] = {"options": f"{given} {SESSION_OPTIONS}" if given else SESSION_OPTIONS}
    if settings.DATABASE_BEHIND_PGBOUNCER:
        # Server-side prepared statements do not survive PgBouncer's transaction pooling.
        args["prepare_threshold"] = None
    return args


@functools.cache
def engine() -> sa.Engine:
    """The process's engine for tenant data, as the app role."""
    url = sqlalchemy_url(settings.DATABASE_URL)
    created = sa.create_engine(
        url,
        pool_size=settings.TASKFLOW_POOL_SIZE,
        max_overflow=settings.TASKFLOW_POOL_OVERFLOW,
        pool_recycle=1800,
        connect_args=connect_args(url),
    )
    event.listen(created, "checkin", _note_idle)
    event.listen(created, "checkout", _refuse_dead)
    for execution in ("do_execute", "do_execute_no_params", "do_executemany"):
        event.listen(created, execution, _begin_bound)
    return created


def _begin_bound(_cursor: Any, _statement: str, *args: Any) -> bool:
    """Before SQLAlchemy executes a statement on a connection of tenant_reads, whose binding
    goes with each driver read: open a transaction bound to its tenant (BEGIN and the binding,
    one round trip), which tenant_reads commits. False: SQLAlchemy executes the statement. A
    statement without a context, or on a connection without a pool record's info, is
    SQLAlchemy's own at first connect, outside any tenant_reads."""
    context = args[-1]
    if context is not None:
        with suppress(NotImplementedError):  # first connect's ad hoc connection has no `info`
            begin_with_prelude(context.root_connection.connection)
    return False


def note_schema(connection: Any, schema: str, *, limit: int | None = None) -> bool:
    """Record on a pooled connection (anything with SQLAlchemy's `.info`) that it served
    `schema`; True once it has served `limit` schemas (default TASKFLOW_POOL_RECYCLE_SCHEMAS,
    0: never), when its holder should replace it: a backend's catalog caches keep every relation
    it touched and only grow. The engine here replaces such a connection at checkout
    (_refuse_dead); one held for long (a fan-out lane's) is replaced by its holder."""
    limit = settings.TASKFLOW_POOL_RECYCLE_SCHEMAS if limit is None else limit
    if not limit:
        return False
    served: set[str] = connection.info.setdefault(_SCHEMAS_SERVED, set())
    served.add(schema)
    return len(served) >= limit


def _note_idle(dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _refuse_dead(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Instead of a ping per checkout (a round trip): a pooled connection the server has closed
    (restart, pg_terminate_backend) has a readable socket, which a poll sees without a round trip;
    only one idle longer than PING_AFTER_IDLE_SECONDS, which may sit behind a dead network, is
    pinged. One that has served TASKFLOW_POOL_RECYCLE_SCHEMAS schemas is replaced too: its
    backend's catalog caches only ever grow. Raising DisconnectionError makes the pool drop it
    and connect afresh."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise sa.exc.DisconnectionError("connection closed")
    limit = settings.TASKFLOW_POOL_RECYCLE_SCHEMAS
    if limit and len(record.info.get(_SCHEMAS_SERVED, ())) >= limit:
        raise sa.exc.DisconnectionError(f"served {limit} schemas: recycled")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):  # an idle connection is sent nothing but its server's goodbye
        raise sa.exc.DisconnectionError("the server closed the connection")
    idle = time.monotonic() - record.info.get("idle_since", time.monotonic())
    if idle > PING_AFTER_IDLE_SECONDS:
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except psycopg.Error as exc:
            raise sa.exc.DisconnectionError("ping failed") from exc


class TenantSession(Session):
    """A session bound to one tenant: `info["binding"]` says which (see tenant_session)."""


@event.listens_for(TenantSession, "after_begin")
def _bind_transaction(session: Session, _transaction: object, conn: sa.Connection) -> None:
    bind_transaction(conn, session.info["binding"])


def bind_transaction(conn: sa.Connection, binding: TenantBinding) -> None:
    """The transaction-local settings of `binding` on `conn`, whose transaction has begun."""
    note_schema(conn.connection, binding.schema)
    # Straight to the driver: a fixed statement needs none of SQLAlchemy's compiling and result
    # machinery, which cost more than the round trip.
    driver: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    if is_citus(driver):
        # Only SET commands reach Citus workers (tenants.local_settings): three SET LOCALs, one
        # simple query.
        driver.execute(
            set_local(
                {
                    "app.tenant_id": binding.tenant_id,
                    "app.actor_id": binding.actor_id,
                    "app.request_id": binding.request_id,
                }
            )
        )
        return
    # Plain PostgreSQL: one prepared statement, measured cheaper than three SET LOCALs
    # (README, "Citus").
    driver.execute(BIND_TRANSACTION, binding_values(binding))


def binding_values(binding: TenantBinding) -> tuple[str, str, str]:
    """BIND_TRANSACTION's parameters for `binding`."""
    return (
        str(binding.tenant_id),
        "" if binding.actor_id is None else str(binding.actor_id),
        binding.request_id or "",
    )


@event.listens_for(TenantSession, "before_flush")
def _lock_before_writing(session: Session, _context: object, _instances: object) -> None:
    hold_write_lock(session)


@contextmanager
def tenant_session(binding: TenantBinding) -> Iterator[Session]:
    """A session whose every transaction is bound to `binding`; committed when the block exits."""
    connection = (
        engine()
        .connect()
        .execution_options(schema_translate_map={PLACEHOLDER_SCHEMA: binding.schema})
    )
    session = TenantSession(bind=connection, expire_on_commit=False, autoflush=True)
    session.info["binding"] = binding
    try:
        yield session
        session.commit()
    except sa.exc.OperationalError as exc:
        session.rollback()
        state = getattr(exc.orig, "sqlstate", None)
        if state == LOCK_NOT_AVAILABLE:
            raise TenantBusy(
                "The tenant's data is being moved; retry shortly.", retry_after=2
            ) from exc
        if state in TRANSACTION_ROLLED_BACK:
            raise ConcurrentChange(
                "The request met a concurrent change of the same data (another write or a schema"
                " migration) and nothing of it was written; send it again.",
                retry_after=1,
            ) from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        connection.close()


@contextmanager
def bound_reads(request: Any) -> Iterator[sa.Connection]:
    """A connection bound to the request's tenant, caller and request id, for reads only; one
    transaction (tenant_reads)."""
    with tenant_reads(request_binding(request)) as connection:
        yield connection


@contextmanager
def tenant_reads(binding: TenantBinding) -> Iterator[sa.Connection]:
    """A connection bound to `binding`, for Core reads only (list pages): what tenant_session
    does without the ORM Session, whose per-request machinery (session transaction, state
    changes, event dispatch) cost a list request more CPU than its query.

    On plain PostgreSQL each read of tenants.driver_reads sends the binding with its statement
    in one Query message: one round trip and one implicit transaction per read, no BEGIN or COMMIT
    of its own (a list page's first page is one round trip); statements through SQLAlchemy run
    in one transaction begun with the binding. On Citus, one transaction bound first, as
    tenant_session's. Nothing written here takes the tenant's write lock: use tenant_session to
    write."""
    connection = (
        engine()
        .connect()
        .execution_options(schema_translate_map={PLACEHOLDER_SCHEMA: binding.schema})
    )
    try:
        driver: psycopg.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        if is_citus(driver):
            with connection.begin():
                bind_transaction(connection, binding)
                yield connection
            return
        note_schema(connection.connection, binding.schema)
        prelude_each_read(connection, BIND_TRANSACTION, binding_values(binding))
        try:
            yield connection
        except BaseException:
            end_prelude(connection, commit=False)
            raise
        end_prelude(connection, commit=True)
    finally:
        connection.close()


def hold_write_lock(session: Session) -> None:
    """Take the tenant's write lock (shared) for this transaction, once.

    Writers share it; a move between placements takes it exclusively, so writes wait for a move
    (at most WRITE_LOCK_TIMEOUT) while reads never do. ORM flushes take it automatically; code
    that writes with Core statements only calls this first.
    """
    connection = session.connection()  # begins the transaction first: before it there is none
    if session.info.get(_WRITE_LOCKED) is session.get_transaction():
        return
    binding: TenantBinding = session.info["binding"]
    # One statement: the select list is evaluated in order, so the lock waits at most the timeout
    # and later statements of the transaction wait for locks as before.
    connection.execute(
        WRITE_LOCK,
        {
            "timeout": f"{settings.TENANT_WRITE_LOCK_TIMEOUT_MS}ms",
            "space": WRITE_LOCK_SPACE,
            "tenant": binding.tenant_id,
        },
    )
    session.info[_WRITE_LOCKED] = session.get_transaction()
