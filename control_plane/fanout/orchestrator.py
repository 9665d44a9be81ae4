"""The orchestrator: moves a run through its stages and keeps at most `concurrency` batches in flight.

Stages: the template schema (Django tenant apps, then Alembic), the `shared` RLS schema when it
exists, then canary tenants, then the rest in batches, then a sweep for tenants that appeared
meanwhile. `advance` is idempotent and runs after every batch (and from its own task), with the
run row locked, so concurrent batch endings never dispatch twice. Tenants already at the target
are marked skipped set-based from Tenant.revisions, without opening their schema.
This module never migrates a tenant itself: batches do (control_plane.fanout.batches), and
every schema is migrated by migrations_sqla.migrator.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from control_plane.fanout import liveness, runs, signals
from control_plane.fanout.models import (
    LANE_STEPS,
    WORK_STEPS,
    MigrationRun,
    Operation,
    RunStatus,
    Stage,
    StepStatus,
    TenantMigration,
)
from control_plane.fanout.outcomes import step_status
from control_plane.fanout.steppers import plan_shared_lanes, stepper_for
from control_plane.observability import metrics
from migrations_sqla import scripts
from migrations_sqla.migrator import Target, owner_engine, platform_schemas
from tenants.cloning import TEMPLATE_SCHEMA, read_revisions
from tenants.models import Isolation, Tenant, TenantStatus
from tenants.placement import SHARED_SCHEMA

log = logging.getLogger(__name__)

MIGRATED_TENANT_STATUSES = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED, TenantStatus.ARCHIVED)
SWEEP_WAIT = timedelta(minutes=2)  # how long the sweep waits for tenants still provisioning
SWEEP_POLL_S = 1.0
PLATFORM_RETRY_S = 1.0  # an advance that found the platform stage's lease held tries again


def advance(
    run_id: int, *, lane: int | None = None, first: Callable[[], object] | None = None
) -> bool:
    """Do whatever the run needs next; safe to call any number of times, from anywhere.

    `lane`: the batch number of a batch task whose tenants are all finished. When the run has
    more work and a free slot, the next tenants are claimed into that same batch number and
    True is returned: the task carries on over its connection, without a new message.
    `first` runs once the run is locked (a batch writes its last outcomes there).
    """
    return _advance(run_id, lane=lane, first=first) is not None


def advance_adopting(run_id: int) -> int | None:
    """advance, for a task that is no lane yet (advance_run): the first batch it would send
    gets a new batch number and is not sent; that number is returned for the caller to run
    as a lane itself (batches.run_batch), None when there is none.

    The task that migrated the template then migrates the canaries in the same process, with
    the plan it compiled and the owner connection it used, instead of one more message and
    another process compiling the plan again. A lane run this way is a lane like any other:
    its lease, the reaper's re-send when its worker dies, redelivery.
    """
    return _advance(run_id, adopt=True)


def _advance(
    run_id: int,
    *,
    lane: int | None = None,
    first: Callable[[], object] | None = None,
    adopt: bool = False,
) -> int | None:
    """advance's body: the batch number the caller carries on with, or None."""
    MigrationRun.objects.filter(pk=run_id, status=RunStatus.PENDING).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), stage=Stage.SCHEMAS
    )
    run = MigrationRun.objects.get(pk=run_id)
    # Also after a redelivery: a worker killed during this stage left the run here.
    if run.status == RunStatus.RUNNING and run.stage == Stage.SCHEMAS:
        # The platform stage has a lane lease of its own, like a batch: a second advance (a
        # redelivery, the reaper's re-send) returns while a live task migrates the template,
        # and reap_dead_lanes re-sends the advance within seconds when that task's worker died.
        with liveness.lane_lease(run_id, liveness.PLATFORM_LANE) as held:
            if held:
                run.refresh_from_db()
            migrated = held and (
                run.status != RunStatus.RUNNING
                or run.stage != Stage.SCHEMAS
                or migrate_platform_schemas(run)
            )
        if not held:
            # Whatever the holder finds (the run cancelled, then resumed meanwhile, say), this
            # advance happens after it: again in a moment, until the lease is free or expired.
            runs.enqueue_advance(run_id, countdown=PLATFORM_RETRY_S)
        if not migrated:
            if first is not None:
                first()
            return None
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().get(pk=run_id)
        if first is not None:
            first()
        if run.status != RunStatus.RUNNING:
            settle_finished(run)
            return None
        if halt_if_budget_spent(run):
            return None
        if run.stage == Stage.CANARY:
            kept, busy = _dispatch(run, canary=True, lane=lane, adopt=adopt)
            if kept is not None or busy or _in_flight(run):
                return kept
            run.stage = Stage.ROLLOUT
            run.save(update_fields=["stage"])
        if run.stage == Stage.ROLLOUT:
            kept, busy = _dispatch(run, canary=False, lane=lane, adopt=adopt)
            if kept is not None or busy or _in_flight(run):
                return kept
            run.stage = Stage.SWEEP
            run.save(update_fields=["stage"])
        if run.stage == Stage.SWEEP:
            return _sweep(run, lane, adopt=adopt)
    return None


# --- Platform schemas --------------------------------------------------------------------------


def migrate_platform_schemas(run: MigrationRun) -> bool:
    """Template (Django tenant apps, then Alembic), then shared; then create the tenant steps.

    Returns False when a platform schema failed: the run is failed and no tenant is touched.
    """
    try:
        target_alembic = scripts.resolve_revision(run.script_location, run.requested_revision)
    except LookupError as exc:
        _finish(run, RunStatus.FAILED, str(exc))
        return False
    target = Target(
        alembic=target_alembic,
        django=None,
        location=run.script_location,
        lock_timeout=run.lock_timeout,
        statement_timeout=run.statement_timeout,
    )
    with owner_engine().connect() as conn:
        migrator = stepper_for(run, conn, target)
        for schema in platform_schemas(conn):
            if (
                run.operation == Operation.BACKFILL
                and schema == SHARED_SCHEMA
                and plan_shared_lanes(run, conn)
            ):
                continue  # its lanes are steps the batches fill side by side
            step, new_step = TenantMigration.objects.update_or_create(
                run=run,
                schema_name=schema,
                defaults={"status": StepStatus.RUNNING, "started_at": timezone.now()},
            )
            # A resumed or redelivered run finishes what an earlier attempt left (its
            # non-transactional steps) even when the schema is already at the target.
            outcome = migrator.migrate(schema, attempted_before=not new_step)
            error = outcome.error
            TenantMigration.objects.filter(pk=step.pk).update(
                status=step_status(outcome.result),
                attempts=max(outcome.attempts, 1),
                finished_at=timezone.now(),
                duration_ms=outcome.duration_ms,
                revisions_before=outcome.before,
                revisions_after=outcome.after,
                error=error,
            )
            if not outcome.ok:
                _finish(run, RunStatus.FAILED, f"The {schema} schema failed to migrate: {error}")
                return False
        raw = conn.connection.driver_connection
        assert raw is not None
        revisions = read_revisions(raw, TEMPLATE_SCHEMA)
    run.target = revisions
    run.stage = Stage.CANARY
    run.save(update_fields=["target", "stage"])
    created = create_tenant_steps(run)
    mark_canaries(run)
    log.info("run %s: template at %s, %s tenant steps", run.pk, revisions, created)
    return True


# --- Tenant steps ------------------------------------------------------------------------------

CREATE_STEPS = """
WITH created AS (
INSERT INTO {steps} (run_id, tenant_id, schema_name, canary, status, attempts, revisions_before,
                     revisions_after, error, finished_at, progress)
SELECT %(run)s, t.id, t.schema_name, false, s.status, 0, t.revisions,
       CASE WHEN s.status = 'skipped' THEN t.revisions ELSE '{{}}'::jsonb END, '',
       CASE WHEN s.status = 'skipped' THEN now() END, '{{}}'::jsonb
FROM {tenants} t
CROSS JOIN LATERAL (SELECT CASE WHEN NOT %(verify)s AND t.revisions = %(target)s::jsonb
                                THEN 'skipped' ELSE 'pending' END AS status) s
WHERE t.isolation = %(isolation)s AND t.status = ANY(%(statuses)s) AND t.schema_name <> 'public'
  AND (%(slugs)s::text[] IS NULL OR t.slug = ANY(%(slugs)s::text[]))
ORDER BY t.id
ON CONFLICT (run_id, schema_name) DO NOTHING
RETURNING status
)
SELECT count(*), count(*) FILTER (WHERE status = 'skipped') FROM created
"""


def create_tenant_steps(run: MigrationRun) -> int:
    """One row per eligible tenant not yet in the run, skipped at once when its recorded
    revisions are the target (one INSERT ... SELECT, no schema opened; the skips are counted in
    the fan-out's metric like the schemas a batch finishes)."""
    query = CREATE_STEPS.format(steps=TenantMigration._meta.db_table, tenants=Tenant._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            query,
            {
                "run": run.pk,
                "verify": run.verify,
                "target": json.dumps(run.target),
                "isolation": Isolation.SCHEMA,
                "statuses": list(MIGRATED_TENANT_STATUSES),
                "slugs": run.tenant_slugs,
            },
        )
        created, skipped = cursor.fetchone()
    metrics.fanout_steps_recorded([StepStatus.SKIPPED.value] * skipped)
    return int(created)


def mark_canaries(run: MigrationRun) -> None:
    """The first `canary_count` tenants to migrate; once per run (a repeated stage keeps them)."""
    if not run.canary_count or run.steps.filter(canary=True).exists():
        return
    ids = list(
        run.steps.filter(tenant__isnull=False, status=StepStatus.PENDING)
        .order_by("id")
        .values_list("id", flat=True)[: run.canary_count]
    )
    TenantMigration.objects.filter(id__in=ids).update(canary=True)


# --- Dispatch ----------------------------------------------------------------------------------


def _in_flight(run: MigrationRun) -> int:
    """Batches handed to workers whose tenants are not all finished."""
    return (
        run.steps.filter(batch__isnull=False, status__in=(StepStatus.PENDING, StepStatus.RUNNING))
        .values("batch")
        .distinct()
        .count()
    )


def _dispatch(
    run: MigrationRun, *, canary: bool, lane: int | None, adopt: bool = False
) -> tuple[int | None, bool]:
    """Hand out batches of unassigned pending tenants up to the free slots.

    The first goes to `lane` (the calling task carries on with it) or, with `adopt` and no
    lane, to a new batch number the calling task runs itself; the others to new batch tasks.
    Returns (the batch number the caller carries on with or None, tenants are waiting or were
    handed out). After the canaries, the shared schema's backfill lanes go first, one per batch.
    """
    waiting = run.steps.filter(tenant__isnull=False, status=StepStatus.PENDING, batch__isnull=True)
    if canary:
        waiting = waiting.filter(canary=True)
    slots = run.concurrency - _in_flight(run)
    keep = False
    sent: list[int] = []
    lanes = run.steps.filter(LANE_STEPS, status=StepStatus.PENDING, batch__isnull=True)
    lane_ids = (
        [] if canary or slots <= 0 else list(lanes.order_by("id").values_list("id", flat=True))
    )
    for step_id in lane_ids[:slots]:
        number, keep = _batch_number(run, lane, adopt, keep, sent)
        TenantMigration.objects.filter(id=step_id).update(batch=number)
        slots -= 1
    # Near the end, split what is left evenly, so no batch finishes long after the others.
    size = min(run.batch_size, -(-waiting.count() // run.concurrency)) if slots > 0 else 0
    while slots > 0:
        ids = list(waiting.order_by("id").values_list("id", flat=True)[:size])
        if not ids:
            break
        number, keep = _batch_number(run, lane, adopt, keep, sent)
        TenantMigration.objects.filter(id__in=ids).update(batch=number)
        slots -= 1
    kept = None
    if keep:
        kept = lane if lane is not None else run.batches_dispatched - len(sent)
    if sent or (keep and lane is None):
        run.save(update_fields=["batches_dispatched"])
    if sent:
        transaction.on_commit(functools.partial(_send_batches, run.pk, sent))
    busy = keep or bool(sent) or waiting.exists() or (not canary and lanes.exists())
    return kept, busy


def _batch_number(
    run: MigrationRun, lane: int | None, adopt: bool, keep: bool, sent: list[int]
) -> tuple[int, bool]:
    """The batch number of the next chunk and whether the caller now carries one on: the
    caller's lane first (or, adopting, the first new number, not sent); then new numbers, sent."""
    if not keep and lane is not None:
        return lane, True
    run.batches_dispatched += 1
    if not keep and adopt:
        return run.batches_dispatched, True
    sent.append(run.batches_dispatched)
    return run.batches_dispatched, keep


def _send_batches(run_id: int, batches: list[int]) -> None:
    for batch in batches:
        runs.enqueue_batch(run_id, batch)


def check_budget(run_id: int) -> None:
    """Between a batch's tenants: stop the run as soon as its budget is spent."""
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.RUNNING:
            halt_if_budget_spent(run)


def halt_if_budget_spent(run: MigrationRun) -> bool:
    """Fail the run (stop dispatching) once failures exceed the budget; canaries have none."""
    failed = run.steps.filter(WORK_STEPS, status=StepStatus.FAILED)
    failed_count = failed.count()
    if not failed_count:
        return False
    if failed.filter(canary=True).exists():
        _finish(run, RunStatus.FAILED, f"A canary tenant failed ({failed_count} failed).")
        return True
    if failed.filter(LANE_STEPS).exists():
        _finish(run, RunStatus.FAILED, f"A lane of the {SHARED_SCHEMA} schema failed.")
        return True
    total = run.steps.filter(WORK_STEPS).count()
    budget = run.failure_budget(total)
    if failed_count > budget:
        _finish(
            run,
            RunStatus.FAILED,
            f"Failure budget spent: {failed_count} tenants failed, budget {run.budget_label()}"
            f" ({budget} of {total}). Dispatching stopped.",
        )
        return True
    return False


# --- End of a run ------------------------------------------------------------------------------


def _sweep(run: MigrationRun, lane: int | None, *, adopt: bool = False) -> int | None:
    """Catch tenants that appeared since the run started, then finish; the batch number the
    caller carries on with, as in _advance.

    Tenants still provisioning are waited for first: one may have cloned the template before
    the run migrated it. A tenant that turns active after this check cloned the migrated one.
    """
    everyone = run.tenant_slugs is None
    if everyone and _still_provisioning():
        transaction.on_commit(
            functools.partial(runs.enqueue_advance, run.pk, countdown=SWEEP_POLL_S)
        )
        return None
    if everyone and create_tenant_steps(run):
        kept, busy = _dispatch(run, canary=False, lane=lane, adopt=adopt)
        if kept is not None or busy:
            return kept
    if not _in_flight(run):
        settle_finished(run, force=True)
    return None


def _still_provisioning() -> bool:
    recent = timezone.now() - SWEEP_WAIT
    return Tenant.objects.filter(
        isolation=Isolation.SCHEMA, status=TenantStatus.PROVISIONING, created_at__gte=recent
    ).exists()


def settle_finished(run: MigrationRun, *, force: bool = False) -> None:
    """Give a run whose work is over its final status.

    `force`: the run's work is done. Otherwise only a failed run is looked at: once every one
    of its tenants is at the target (its failed tenants were retried), it has succeeded.
    """
    if not force and run.status != RunStatus.FAILED:
        return
    steps = run.steps.filter(WORK_STEPS)
    unfinished = steps.filter(status__in=(StepStatus.PENDING, StepStatus.RUNNING)).count()
    failed = steps.filter(status=StepStatus.FAILED).count()
    if not unfinished and not failed:
        _finish(run, RunStatus.SUCCEEDED, "")
    elif force:
        _finish(run, RunStatus.FAILED, f"{failed} tenants failed; {unfinished} not migrated.")


def _finish(run: MigrationRun, status: str, error: str) -> None:
    run.status = status
    run.stage = Stage.DONE if status == RunStatus.SUCCEEDED else run.stage
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "stage", "error", "finished_at"])
    if status == RunStatus.SUCCEEDED:
        # Whoever started the run for a purpose (an evolution's next step) acts on it now, not
        # at its watcher's next poll.
        transaction.on_commit(functools.partial(signals.send_run_succeeded, run.pk))
