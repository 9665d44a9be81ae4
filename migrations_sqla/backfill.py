"""Batched backfills: the backfill phase of an evolution, one schema at a time, never one long
transaction per table.

A revision that expands a table declares what its backfill writes (`BACKFILL = Backfill(...)`:
the table, the assignment, and the predicate of rows still to fill). `SchemaBackfiller` fills
one schema in batches of at most `batch_rows` rows, each its own short transaction (timeouts,
`app.tenant_id` and the owner-only history stand-down set transaction-locally, so the rows'
history does not grow by a backfill that changes no value a client wrote), walking each tenant's
rows by `(tenant_id, id)` keyset order, sleeping `throttle_ms` between batches. In the shared
schema the rows of every rls tenant are split into lanes (`plan_lanes`: contiguous ranges of the
pending rows in `(tenant_id, id)` order, about as many rows each), one step each, named
`shared/<n>` (`lane_name`), which the fan-out's workers run side by side; a lane's bounds travel
in its progress. Its `migrate()` has the migrator's shape (one schema or lane in, an Outcome out,
never raising for the schema), so the fan-out's batches run it as they run SchemaMigrator. Progress (rows written, and the keyset position) is reported through a
callback; given back as `resume_from`, a redelivered schema (its worker was SIGKILLed, the
database restarted) carries on from there, and is correct from anywhere because the predicate
skips rows already filled. Never changes a table's shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from django.utils import timezone
from psycopg import errors, sql

from migrations_sqla import scripts
from migrations_sqla.migrator import (
    MAX_ATTEMPTS,
    ConnectionLost,
    Outcome,
    Result,
    backoff,
    check_schema_name,
)
from tenants.citus import is_citus
from tenants.local_settings import bind_tenant

DEFAULT_BATCH_ROWS = 1000
REPORT_S = 0.5
LANE_SEP = "/"
ID_MAX = 2**63 - 1
# Position of a row in (tenant_id, id) order; a lane is [from, to), None meaning unbounded.
Position = list[int]


@dataclass(frozen=True)
class Backfill:
    """What a backfill writes: `UPDATE table SET assign WHERE pending` (unqualified columns)."""

    table: str
    assign: str
    pending: str


def declared_backfill(location: str, revision: str) -> Backfill:
    """The `BACKFILL` a revision declares (LookupError when it declares none)."""
    found = scripts.script_directory(location).get_revision(revision)
    backfill = getattr(found.module, "BACKFILL", None) if found else None
    if not isinstance(backfill, Backfill):
        raise LookupError(f"revision {revision!r} declares no BACKFILL")
    return backfill


@dataclass(frozen=True)
class Options:
    batch_rows: int = DEFAULT_BATCH_ROWS
    throttle_ms: int = 0
    lock_timeout: str = "5s"
    statement_timeout: str = "1min"


def lane_name(schema: str, number: int) -> str:
    """The step name of lane `number` (from 1) of `schema`'s backfill."""
    return f"{schema}{LANE_SEP}{number}"


def split_lane(name: str) -> tuple[str, int | None]:
    """(schema, lane number) of a step name; (schema, None) for a whole schema."""
    schema, sep, number = name.partition(LANE_SEP)
    return (schema, int(number)) if sep else (schema, None)


def plan_lanes(
    raw: psycopg.Connection,
    schema: str,
    backfill: Backfill,
    tenant_ids: list[int],
    *,
    lanes: int,
    min_rows: int,
) -> list[dict[str, Position | None]]:
    """At most `lanes` lanes of about equal pending rows (at least `min_rows` each) over the
    rls tenants' rows of `schema`: [{"from": position or None, "to": position or None}].

    Counted per tenant (row-level security is forced on the owner too: each count is in its
    own tenant's transaction); a lane boundary inside a tenant is the id of its k-th pending row.
    The first lane starts at the beginning and the last one ends at the end, so rows a count
    missed are still some lane's.
    """
    table = sql.Identifier(check_schema_name(schema), backfill.table)
    counts: list[tuple[int, int]] = []
    count = sql.SQL(
        "SELECT count(*) FROM {table} WHERE tenant_id = %(t)s::bigint AND {pending}"
    ).format(table=table, pending=sql.SQL(backfill.pending))
    nth = sql.SQL(
        "SELECT id FROM {table} WHERE tenant_id = %(t)s::bigint AND {pending}"
        " ORDER BY id OFFSET %(k)s LIMIT 1"
    ).format(table=table, pending=sql.SQL(backfill.pending))
    with raw.transaction():
        for tenant in sorted(tenant_ids):
            raw.execute(bind_tenant(tenant))
            found = raw.execute(count, {"t": tenant}).fetchone()
            if found and found[0]:
                counts.append((tenant, int(found[0])))
    total = sum(n for _t, n in counts)
    wanted = max(1, min(lanes, total // max(1, min_rows)))
    if wanted == 1:
        return [{"from": None, "to": None}]
    share = total / wanted
    cuts: list[Position] = []
    seen = 0
    with raw.transaction():
        for tenant, n in counts:
            while len(cuts) < wanted - 1 and seen + n > share * (len(cuts) + 1):
                offset = int(share * (len(cuts) + 1)) - seen
                raw.execute(bind_tenant(tenant))
                row = raw.execute(nth, {"t": tenant, "k": offset}).fetchone()
                if row is None:
                    break
                cuts.append([tenant, int(row[0])])
            seen += n
    bounds: list[Position | None] = [None, *cuts, None]
    return [{"from": bounds[i], "to": bounds[i + 1]} for i in range(len(bounds) - 1)]


# progress(schema, {"rows": n, "cursor": [tenant_id, last_id], "lane": bounds})
Progress = Callable[[str, dict[str, Any]], None]


class SchemaBackfiller:
    """Backfills schemas one after another over one owner connection (a batch's connection)."""

    def __init__(
        self,
        connection: sa.Connection,
        backfill: Backfill,
        *,
        tenant_ids: Callable[[str], list[int]],
        options: Options = Options(),
        progress: Progress | None = None,
        resume_from: Callable[[str], dict[str, Any]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = self.connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        self.raw: psycopg.Connection = raw
        self.backfill = backfill
        self.tenant_ids = tenant_ids
        self.options = options
        self.progress = progress
        self.resume_from = resume_from
        self.sleep = sleep
        self.citus = is_citus(raw)

    def migrate(
        self,
        schema: str,
        *,
        attempted_before: bool = False,
        recorded: dict[str, str] | None = None,
    ) -> Outcome:
        """Fill `schema`'s pending rows in batches; MIGRATED when rows were written, else SKIPPED."""
        del recorded  # idempotent from anywhere: the predicate decides
        outcome = Outcome()
        started = time.perf_counter()
        try:
            lane = split_lane(schema)[1]
            check_schema_name(split_lane(schema)[0])
            # A schema's first try has nothing recorded; a lane's bounds are in its progress.
            fresh = not attempted_before and lane is None
            state = dict(self.resume_from(schema)) if self.resume_from and not fresh else {}
            rows = self._fill(schema, state, outcome)
            outcome.result = Result.MIGRATED if rows else Result.SKIPPED
        except ConnectionLost:
            raise
        except Exception as exc:
            if self.raw.closed or self.raw.broken:  # not the schema's fault: the caller retries
                raise ConnectionLost(f"{type(exc).__name__}: {exc}".strip()) from exc
            self._rollback()
            outcome.result = Result.FAILED
            outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
        outcome.finished_at = timezone.now()
        outcome.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        return outcome

    def _fill(self, name: str, state: dict[str, Any], outcome: Outcome) -> int:
        """Fill the schema (or the lane) `name` from where `state` says an earlier try stopped."""
        schema, _lane = split_lane(name)
        rows = int(state.get("rows", 0))
        cursor = state.get("cursor") or [None, 0]
        lane = state.get("lane") or {"from": None, "to": None}
        start, end = lane.get("from"), lane.get("to")
        statement = self._statement(schema)
        last_report = time.monotonic()
        for tenant_id in sorted(self.tenant_ids(schema)):
            if cursor[0] is not None and tenant_id < cursor[0]:
                continue  # finished before the interruption
            if (start and tenant_id < start[0]) or (end and tenant_id > end[0]):
                continue  # another lane's
            last_id = int(cursor[1]) if cursor[0] == tenant_id else 0
            if start and tenant_id == start[0]:
                last_id = max(last_id, int(start[1]) - 1)
            before = int(end[1]) if end and tenant_id == end[0] else ID_MAX
            while last_id < before - 1:
                high, written = self._batch(statement, tenant_id, last_id, before, outcome)
                rows += written
                if high is None:
                    break
                last_id = high
                cursor = [tenant_id, last_id]
                if self.progress and time.monotonic() - last_report >= REPORT_S:
                    self.progress(name, {"rows": rows, "cursor": cursor, "lane": lane})
                    last_report = time.monotonic()
                if self.options.throttle_ms:
                    self.sleep(self.options.throttle_ms / 1000)
            cursor = [tenant_id, ID_MAX]
        if self.progress:
            self.progress(name, {"rows": rows, "cursor": cursor, "lane": lane, "done": True})
        return rows

    def _statement(self, schema: str) -> tuple[str, str]:
        """The batch's transaction, before and after its tenant's binding (`_batch` puts it in)."""
        table = sql.Identifier(check_schema_name(schema), self.backfill.table)
        # synchronous_commit off: a batch does not wait for its WAL to reach the disk (nor
        # make the API's commits queue behind its flushes). A batch lost in a crash is lost
        # whole, and its rows are pending again for the predicate; the progress recorded after
        # it is a synchronous commit of the same server, whose flush covers the batch's WAL
        # too, so a recorded position never passes a lost batch (and the switch's sweep
        # proves every row filled).
        begin = sql.SQL(
            "BEGIN;"
            "SELECT set_config('lock_timeout', {lock}, true),"
            " set_config('statement_timeout', {stmt}, true),"
            " set_config('synchronous_commit', 'off', true);"
        ).format(
            lock=sql.Literal(self.options.lock_timeout),
            stmt=sql.Literal(self.options.statement_timeout),
        )
        body = sql.SQL(
            # tenant_id in the UPDATE too: on a table distributed by it, Citus routes the
            # statement to the one shard holding the tenant.
            "WITH batch AS (SELECT id FROM {table} WHERE tenant_id = %(tenant)s::bigint"
            " AND id > %(after)s AND id < %(before)s ORDER BY tenant_id, id LIMIT %(limit)s),"
            " written AS (UPDATE {table} SET {assign} FROM batch"
            " WHERE {table}.tenant_id = %(tenant)s::bigint AND {table}.id = batch.id"
            " AND {pending} RETURNING 1)"
            " SELECT (SELECT max(id) FROM batch) AS high, (SELECT count(*) FROM written),"
            " (SELECT count(*) FROM batch);"
            "COMMIT"
        ).format(
            table=table,
            assign=sql.SQL(self.backfill.assign),
            pending=sql.SQL(self.backfill.pending),
        )
        return begin.as_string(self.raw), body.as_string(self.raw)

    def _batch(
        self, statement: tuple[str, str], tenant_id: int, after: int, before: int, outcome: Outcome
    ) -> tuple[int | None, int]:
        """One batch in its own transaction, retried on lock timeouts; (highest id seen, written)."""
        params = {
            "tenant": str(tenant_id),
            "after": after,
            "before": before,
            "limit": self.options.batch_rows,
        }
        begin, body = statement
        # SET LOCAL, not set_config: on Citus only SET commands reach the workers that hold the
        # rows, and the owner-only history stand-down must reach them too (tenants.local_settings).
        binding = bind_tenant(tenant_id, copying=True).as_string(self.raw) + ";"
        for attempt in range(MAX_ATTEMPTS):
            outcome.attempts = max(outcome.attempts, attempt + 1)
            try:
                cur = psycopg.ClientCursor(self.raw)
                if self.citus:
                    # Citus sends a SET's whole query string on to the workers: the SETs go in
                    # a query of their own (three round trips).
                    self.raw.execute(begin.encode())
                    self.raw.execute(binding.encode())
                    cur.execute(body, params)
                else:
                    # Client-side binding: the whole transaction is one round trip.
                    cur.execute(begin + binding + body, params)
                row = None
                while True:  # the SELECT's result set is the last one but COMMIT's
                    if cur.description is not None and cur.description[0].name == "high":
                        row = cur.fetchone()
                    if not cur.nextset():
                        break
                assert row is not None
                if row[0] is None:
                    return None, 0
                # A short batch was the tenant's last: no round trip to find nothing more.
                return (int(row[0]) if row[2] == self.options.batch_rows else None), int(row[1])
            except errors.LockNotAvailable:
                self._rollback()
                if attempt + 1 == MAX_ATTEMPTS:
                    raise
                self.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _rollback(self) -> None:
        if not self.raw.closed and self.raw.info.transaction_status not in (
            psycopg.pq.TransactionStatus.IDLE,
            psycopg.pq.TransactionStatus.UNKNOWN,
        ):
            self.raw.execute("ROLLBACK")
