"""A batch: the tenants one worker task migrates over one reused owner connection.

A batch task is a lane: when its tenants are done it claims the next ones into the same batch
number (under the run's lock, while there is work and a free slot) and carries on, so a run
uses `concurrency` tasks and connections, not one message per chunk. Outcomes are recorded in
bulk: one statement per flush (every FLUSH_S seconds and at the end) writes them and
Tenant.revisions of the migrated tenants. Between flushes the batch
looks at its run: once the run is cancelled or failed, no further tenant starts (those not
started go back to pending, unassigned, for a resume). A redelivered batch (its worker was
killed) finds every tenant the lane had claimed, finished ones recorded or, if the kill came
before the flush, at the target under their lock: none is migrated twice.
Between chunks the common case is one round trip (control_plane.fanout.claims.claim_next:
outcomes written and next tenants claimed in one statement); the careful way is
orchestrator.advance. A lane replaces its owner connection every FANOUT_RECYCLE_SCHEMAS
schemas (tenants.binding.note_schema), so no backend keeps the catalog of thousands of schemas.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from django.conf import settings
from django.db import connection
from django.utils import timezone

from control_plane.fanout import claims, liveness, orchestrator, runs
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus, TenantMigration
from control_plane.fanout.outcomes import step_status
from control_plane.fanout.steppers import Stepper, stepper_for
from control_plane.observability import metrics
from migrations_sqla.migrator import Outcome, owner_engine
from tenants.binding import note_schema
from tenants.models import Tenant

FLUSH_S = 1.0

# The buffered outcomes and the migrated tenants' recorded revisions, in one statement (as
# claims.claim_next writes them between chunks).
RECORD = """
WITH v AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x(
        id bigint, tenant_id bigint, status text, attempts int, started_at timestamptz,
        finished_at timestamptz, duration_ms float8, before jsonb, after jsonb, error text,
        revise boolean)
), recorded AS (
    UPDATE {steps} AS m SET status = v.status, attempts = m.attempts + v.attempts,
           started_at = coalesce(m.started_at, v.started_at), finished_at = v.finished_at,
           duration_ms = v.duration_ms, revisions_before = v.before, revisions_after = v.after,
           error = v.error
    FROM v WHERE m.id = v.id
)
UPDATE {tenants} AS t SET revisions = v.after FROM v WHERE t.id = v.tenant_id AND v.revise
"""


@dataclass(frozen=True)
class Step:
    id: int
    tenant_id: int
    schema_name: str
    status: str
    attempts: int
    recorded: dict[str, str]


def run_batch(run_id: int, batch: int, *, force: bool = False, looked_again: bool = False) -> int:
    """Migrate the batch's unfinished tenants, then more, claimed into the same batch number,
    while the run has work and a free slot; return how many tenants were attempted.

    The batch number is the task's lane: a redelivered message (its worker was killed) finds
    every tenant the lane had claimed. `force` (retrying one tenant) runs on a failed run too.
    The lane's lease (control_plane.fanout.liveness) is held throughout: a second task on the
    same lane does not migrate beside it, and the reaper re-sends a lane whose worker died.

    A delivery that finds the lease held while the lane has unfinished tenants cannot tell a
    live holder (a duplicate) from one just killed: the broker may deliver a dead worker's
    message again before its lease has lapsed. So it looks once more, one lease length later
    (`looked_again`), when a dead holder's lease is gone for certain; the lane does not wait
    for beat's reaper, which may not be running. A live holder still holds it then: done.
    """
    with liveness.lane_lease(run_id, batch) as held:
        if held:
            return _run_lane(run_id, batch, force=force)
    if not looked_again and _unfinished(run_id, batch).exists():
        runs.enqueue_batch(
            run_id, batch, force=force, countdown=liveness.lease_seconds(), looked_again=True
        )
    return 0


def _run_lane(run_id: int, batch: int, *, force: bool) -> int:
    run = MigrationRun.objects.get(pk=run_id)
    if not _may_continue(run.status, force):
        _release(list(_unfinished(run_id, batch, status=StepStatus.PENDING)))
        orchestrator.advance(run_id)
        return 0
    done = 0
    with Lane(run) as lane:
        steps = [Step(*row) for row in _unfinished(run_id, batch)]
        claimed = False  # the steps were claimed running by claim_next
        while True:
            recorder = Recorder()
            attempted, stopped = _migrate_steps(
                run, lane, steps, recorder, force=force, claimed=claimed
            )
            done += attempted
            if stopped:
                recorder.flush()
                _release([s.id for s in steps[attempted:]])
                orchestrator.advance(run_id)
                break
            # The last outcomes are written under the run's lock, with the next claim: no
            # other batch ever sees this one finished yet still holding its connection. A
            # failure among them is for advance to weigh against the budget.
            if not recorder.failed():
                rows = claims.claim_next(run_id, batch, recorder.rows)
                if rows:
                    recorder.written()
                    steps, claimed = [Step(*row) for row in rows], True
                    continue
                if claims.retire(run_id, batch, recorder.rows):
                    recorder.written()  # another lane is still going: its end advances the run
                    break
            if not orchestrator.advance(run_id, lane=batch, first=recorder.flush):
                break
            steps = [Step(*row) for row in _unfinished(run_id, batch)]
            claimed = False
    return done


def _unfinished(run_id: int, batch: int, status: str | None = None) -> Any:
    steps = TenantMigration.objects.filter(run_id=run_id, batch=batch)
    if status is not None:
        return steps.filter(status=status).values_list("id", flat=True)
    return (
        steps.filter(status__in=(StepStatus.PENDING, StepStatus.RUNNING))
        .order_by("id")
        .values_list("id", "tenant_id", "schema_name", "status", "attempts", "revisions_before")
    )


def _migrate_steps(
    run: MigrationRun,
    migrator: Stepper,
    steps: list[Step],
    recorder: Recorder,
    *,
    force: bool,
    claimed: bool = False,
) -> tuple[int, bool]:
    """Migrate `steps` in order, flushing as it goes; the caller writes the last outcomes.

    `claimed`: the steps are marked running already (claims.claim_next did it).
    Returns (how many were attempted, whether the run said stop).
    """
    if not steps:
        return 0, False
    if not claimed:
        TenantMigration.objects.filter(
            id__in=[s.id for s in steps], status=StepStatus.PENDING
        ).update(status=StepStatus.RUNNING, started_at=timezone.now())
    done = 0
    stopped = False
    for step in steps:
        if recorder.due():
            if recorder.flush():
                orchestrator.check_budget(run.pk)
            if not _may_continue(_status(run.pk), force):
                stopped = True
                break
        outcome = migrator.migrate(
            step.schema_name,
            attempted_before=step.status == StepStatus.RUNNING or step.attempts > 0,
            recorded=None if run.verify else step.recorded,
        )
        recorder.add(step, outcome)
        done += 1
    return done, stopped


def _may_continue(status: str, force: bool) -> bool:
    return status == RunStatus.RUNNING or (force and status == RunStatus.FAILED)


def _status(run_id: int) -> str:
    return str(MigrationRun.objects.filter(pk=run_id).values_list("status", flat=True).get())


def _release(ids: list[int]) -> None:
    """Tenants that did not start go back to pending, in no batch (a resume picks them up)."""
    if ids:
        TenantMigration.objects.filter(
            id__in=ids, status__in=(StepStatus.PENDING, StepStatus.RUNNING)
        ).update(status=StepStatus.PENDING, batch=None)


class Recorder:
    """Buffers outcomes and writes them set-based: one statement per flush, the tenants'
    recorded revisions with them (nothing per schema but the row)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.last = time.monotonic()

    def due(self) -> bool:
        return bool(self.rows) and time.monotonic() - self.last >= FLUSH_S

    def add(self, step: Step, outcome: Outcome) -> None:
        status = step_status(outcome.result)
        if status == StepStatus.SKIPPED and step.status == StepStatus.RUNNING:
            status = StepStatus.SUCCEEDED  # an earlier delivery of this batch migrated it
        after = outcome.after
        revise = status != StepStatus.FAILED and bool(after)
        finished = outcome.finished_at
        self.rows.append(
            {
                "id": step.id,
                "tenant_id": step.tenant_id,
                "revise": revise,
                "status": status,
                "attempts": outcome.attempts,
                "started_at": outcome.started_at.isoformat(),
                "finished_at": finished.isoformat() if finished else None,
                "duration_ms": outcome.duration_ms,
                "before": outcome.before,
                "after": after,
                "error": outcome.error,
            }
        )

    def failed(self) -> bool:
        return any(row["status"] == StepStatus.FAILED for row in self.rows)

    def flush(self) -> bool:
        """Write what is buffered; True when a failure was among it."""
        failed = self.failed()
        if self.rows:
            with connection.cursor() as cursor:
                query = RECORD.format(
                    steps=TenantMigration._meta.db_table, tenants=Tenant._meta.db_table
                )
                cursor.execute(query, [json.dumps(self.rows)])
        self.written()
        return failed

    def written(self) -> None:
        """The buffered outcomes were written (here or by claims.claim_next): count them and
        start afresh."""
        metrics.fanout_steps_recorded([str(row["status"]) for row in self.rows])
        self.rows = []
        self.last = time.monotonic()


class Lane:
    """A batch lane's owner connection and stepper, replaced after FANOUT_RECYCLE_SCHEMAS
    schemas: its backend's catalog caches keep every schema it migrated and only grow.

    The replaced connection is invalidated, not returned to the pool, so its backend exits. A
    Stepper itself, opened at the first schema.
    """

    def __init__(self, run: MigrationRun) -> None:
        self.run = run
        self.conn: sa.Connection | None = None
        self.stepper: Stepper | None = None

    def connection(self) -> sa.Connection:
        """The lane's connection now, opened (with its stepper) when there is none."""
        if self.conn is None or self.stepper is None:
            self.conn = owner_engine().connect()
            self.stepper = stepper_for(self.run, self.conn)
        return self.conn

    def migrate(
        self, schema: str, *, attempted_before: bool = False, recorded: dict[str, str] | None = None
    ) -> Outcome:
        conn = self.connection()
        assert self.stepper is not None
        outcome = self.stepper.migrate(schema, attempted_before=attempted_before, recorded=recorded)
        if note_schema(conn.connection, schema, limit=settings.FANOUT_RECYCLE_SCHEMAS):
            conn.invalidate()
            self.close()
        return outcome

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.stepper = None, None

    def __enter__(self) -> Lane:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()
