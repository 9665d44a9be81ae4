"""A batch: the tenants one worker task migrates over one reused owner connection.

A batch task is a lane: when its tenants are done it claims the next ones into the same batch
number (under the run's lock, while there is work and a free slot) and carries on, so a run
uses `concurrency` tasks and connections, not one message per chunk. Outcomes are recorded in
bulk (one UPDATE per flush, every FLUSH_S seconds and at the end), and Tenant.revisions of the
migrated tenants with one queryset .update() per distinct result. Between flushes the batch
looks at its run: once the run is cancelled or failed, no further tenant starts (those not
started go back to pending, unassigned, for a resume). A redelivered batch (its worker was
killed) finds every tenant the lane had claimed, finished ones recorded or, if the kill came
before the flush, at the target under their lock: none is migrated twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from control_plane.fanout import liveness, orchestrator
from control_plane.fanout.models import MigrationRun, RunStatus, StepStatus, TenantMigration
from control_plane.fanout.outcomes import step_status
from control_plane.fanout.steppers import Stepper, stepper_for
from control_plane.observability import metrics
from migrations_sqla.migrator import Outcome, owner_engine
from tenants.models import Tenant

FLUSH_S = 1.0

RECORD = """
UPDATE {steps} AS m SET status = v.status, attempts = m.attempts + v.attempts,
       started_at = coalesce(m.started_at, v.started_at), finished_at = v.finished_at,
       duration_ms = v.duration_ms, revisions_before = v.before, revisions_after = v.after,
       error = v.error
FROM (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x(
        id bigint, status text, attempts int, started_at timestamptz, finished_at timestamptz,
        duration_ms float8, before jsonb, after jsonb, error text)) AS v
WHERE m.id = v.id
"""


@dataclass(frozen=True)
class Step:
    id: int
    tenant_id: int
    schema_name: str
    status: str
    attempts: int
    recorded: dict[str, str]


def run_batch(run_id: int, batch: int, *, force: bool = False) -> int:
    """Migrate the batch's unfinished tenants, then more, claimed into the same batch number,
    while the run has work and a free slot; return how many tenants were attempted.

    The batch number is the task's lane: a redelivered message (its worker was killed) finds
    every tenant the lane had claimed. `force` (retrying one tenant) runs on a failed run too.
    The lane's lease (control_plane.fanout.liveness) is held throughout: a second task on the
    same lane returns at once, and the reaper re-sends a lane whose worker died.
    """
    with liveness.lane_lease(run_id, batch) as held:
        if not held:  # a live task is on this lane already (a redelivery or a re-send)
            return 0
        return _run_lane(run_id, batch, force=force)


def _run_lane(run_id: int, batch: int, *, force: bool) -> int:
    run = MigrationRun.objects.get(pk=run_id)
    if not _may_continue(run.status, force):
        _release(list(_unfinished(run_id, batch, status=StepStatus.PENDING)))
        orchestrator.advance(run_id)
        return 0
    done = 0
    with owner_engine().connect() as conn:
        migrator = stepper_for(run, conn)
        while True:
            steps = [Step(*row) for row in _unfinished(run_id, batch)]
            recorder = Recorder()
            attempted, stopped = _migrate_steps(run, migrator, steps, recorder, force=force)
            done += attempted
            if stopped:
                recorder.flush()
                _release([s.id for s in steps[attempted:]])
                orchestrator.advance(run_id)
                break
            # The last outcomes are written under the run's lock, with the next claim: no
            # other batch ever sees this one finished yet still holding its connection.
            if not orchestrator.advance(run_id, lane=batch, first=recorder.flush):
                break
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
) -> tuple[int, bool]:
    """Migrate `steps` in order, flushing as it goes; the caller writes the last outcomes.

    Returns (how many were attempted, whether the run said stop).
    """
    if not steps:
        return 0, False
    TenantMigration.objects.filter(id__in=[s.id for s in steps], status=StepStatus.PENDING).update(
        status=StepStatus.RUNNING, started_at=timezone.now()
    )
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
    """Buffers outcomes and writes them set-based."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.revisions: dict[str, list[int]] = {}
        self.last = time.monotonic()

    def due(self) -> bool:
        return bool(self.rows) and time.monotonic() - self.last >= FLUSH_S

    def add(self, step: Step, outcome: Outcome) -> None:
        status = step_status(outcome.result)
        if status == StepStatus.SKIPPED and step.status == StepStatus.RUNNING:
            status = StepStatus.SUCCEEDED  # an earlier delivery of this batch migrated it
        self.rows.append(
            {
                "id": step.id,
                "status": status,
                "attempts": outcome.attempts,
                "started_at": outcome.started_at.isoformat(),
                "finished_at": outcome.finished_at.isoformat() if outcome.finished_at else None,
                "duration_ms": outcome.duration_ms,
                "before": outcome.before,
                "after": outcome.after,
                "error": outcome.error,
            }
        )
        if status != StepStatus.FAILED and outcome.after:
            key = json.dumps(outcome.after, sort_keys=True)
            self.revisions.setdefault(key, []).append(step.tenant_id)

    def flush(self) -> bool:
        """Write what is buffered; True when a failure was among it."""
        failed = any(row["status"] == StepStatus.FAILED for row in self.rows)
        metrics.fanout_steps_recorded([str(row["status"]) for row in self.rows])
        if self.rows:
            with connection.cursor() as cursor:
                cursor.execute(
                    RECORD.format(steps=TenantMigration._meta.db_table), [json.dumps(self.rows)]
                )
        for key, tenant_ids in self.revisions.items():
            Tenant.objects.filter(pk__in=tenant_ids).update(revisions=json.loads(key))
        self.rows, self.revisions = [], {}
        self.last = time.monotonic()
        return failed
