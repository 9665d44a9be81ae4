"""Runs of the migration fan-out: start, resume, cancel, retry one tenant, and what a run shows.

The one service the admin, the operator API and the CLI call. Work happens in workers
(control_plane.fanout.tasks); these functions record intent and enqueue, after the commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Case, Count, Q, QuerySet, Value, When
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.fanout.models import (
    COUNT_MAX,
    WORK_STEPS,
    MigrationRun,
    Operation,
    RunStatus,
    Stage,
    StepStatus,
    TenantMigration,
)
from migrations_sqla import scripts
from tenants.cloning import TEMPLATE_SCHEMA, read_revisions
from tenants.database_roles import owner_connection
from tenants.models import Isolation, Tenant
from tenants.problems import NotFound, Problem

ADVANCE_TASK = "control_plane.fanout.advance_run"
BATCH_TASK = "control_plane.fanout.migrate_batch"
BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
# A PostgreSQL timeout as a run accepts it, whole: ASCII digits, then an optional unit.
TIMEOUT = re.compile(r"[0-9]+(ms|s|min|h)?")
TIMEOUT_PATTERN = f"^{TIMEOUT.pattern}$"  # the same rule, as the API describes it
STEP_LIMIT = 200


class InvalidRun(Problem):
    status = 400
    title = "Invalid migration run"


class UnprocessableRun(InvalidRun):
    """A well-formed run the platform cannot carry out: a revision or tenant that does not
    exist, a failure budget past its bounds (422; a malformed one is InvalidRun, 400)."""

    status = 422


class RunConflict(Problem):
    status = 409
    title = "Migration run conflict"


class DowngradeNotConfirmed(RunConflict):
    """A run would take schemas to an older revision and nobody said that is meant."""

    title = "Downgrade not confirmed"


@dataclass(frozen=True)
class FailureBudget:
    count: int | None
    percent: float | None


def parse_failure_budget(value: str | int | None) -> FailureBudget:
    """ "3" tolerates three failed tenants, "5%" five per cent of the run's tenants."""
    if value is None or value == "":
        return FailureBudget(0, None)
    match = BUDGET.match(str(value))
    if not match:
        raise InvalidRun(f"max_failures must be a count or a percentage, not {value!r}.")
    number, percent = match.groups()
    if percent:
        if float(number) > 100:
            raise UnprocessableRun("max_failures percentage is at most 100%.")
        return FailureBudget(None, float(number))
    if "." in number:
        raise InvalidRun("max_failures count must be a whole number.")
    if int(number) > COUNT_MAX:
        raise UnprocessableRun(f"max_failures count is at most {COUNT_MAX}.")
    return FailureBudget(int(number), None)


def start_run(
    *,
    tenants: list[str] | None = None,
    to: str = "head",
    canary: int = 1,
    concurrency: int = 2,
    batch_size: int = 50,
    max_failures: str | int | None = 0,
    verify: bool = False,
    lock_timeout: str = "5s",
    statement_timeout: str = "5min",
    script_location: str | None = None,
    created_by: User | None = None,
    started_from: str = "",
    enqueue: bool = True,
    allow_downgrade: bool = False,
    operation: str = Operation.MIGRATE,
    options: dict[str, Any] | None = None,
) -> MigrationRun:
    """Record a run and queue its first step; the template is migrated by a worker.

    A run that would take the template or a tenant to an older revision is refused with
    DowngradeNotConfirmed unless `allow_downgrade` (the operator confirmed it). A backfill run
    (`operation`) fills the BACKFILL that revision `to` declares in every schema (never skipped
    from recorded revisions: its work is rows, not revisions); it changes no revision.
    """
    if operation == Operation.BACKFILL:
        verify, allow_downgrade = True, True
        options = {**(options or {}), "revision": to}
    elif operation != Operation.MIGRATE:
        raise InvalidRun(f"operation is migrate or backfill, not {operation!r}.")
    location = scripts.default_location() if script_location is None else script_location
    try:
        target = scripts.resolve_revision(location, to or "head")
    except LookupError as exc:
        raise UnprocessableRun(str(exc)) from exc
    if concurrency < 1 or batch_size < 1 or canary < 0:
        raise InvalidRun("concurrency and batch_size are at least 1, canary at least 0.")
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if not TIMEOUT.fullmatch(value):
            raise InvalidRun(f"{name} must look like 500ms, 5s, 5min or 1h, not {value!r}.")
    slugs = _check_tenants(tenants) if tenants else None
    budget = parse_failure_budget(max_failures)
    if not allow_downgrade:
        recorded = Tenant.objects.filter(isolation=Isolation.SCHEMA).exclude(schema_name="public")
        if slugs is not None:
            recorded = recorded.filter(slug__in=slugs)
        sources = set(recorded.values_list("revisions__alembic", flat=True).distinct())
        _refuse_downgrade(location, target, sources, "A run")
    with transaction.atomic():
        run = MigrationRun.objects.create(
            created_by=created_by,
            started_from=started_from[:200],
            requested_revision=to or "head",
            script_location=location,
            tenant_slugs=slugs,
            canary_count=canary,
            concurrency=concurrency,
            batch_size=batch_size,
            max_failures=budget.count,
            max_failure_percent=budget.percent,
            verify=verify,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
            operation=operation,
            options=options or {},
        )
        if enqueue:
            transaction.on_commit(lambda: enqueue_advance(run.pk))
    return run


def _check_tenants(slugs: list[str]) -> list[str]:
    wanted = sorted({s.strip() for s in slugs if s.strip()})
    found = set(
        Tenant.objects.filter(slug__in=wanted, isolation=Isolation.SCHEMA).values_list(
            "slug", flat=True
        )
    )
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UnprocessableRun(f"No schema-mode tenant with slug {', '.join(missing)}.")
    return wanted


def enqueue_advance(
    run_id: int, *, countdown: float | None = None, looked_again: bool = False
) -> None:
    kwargs = {"looked_again": True} if looked_again else {}
    celery_app.send_task(ADVANCE_TASK, args=[run_id], kwargs=kwargs, countdown=countdown)


def enqueue_batch(
    run_id: int,
    batch: int,
    *,
    force: bool = False,
    countdown: float | None = None,
    looked_again: bool = False,
) -> None:
    kwargs = {"force": force, **({"looked_again": True} if looked_again else {})}
    celery_app.send_task(BATCH_TASK, args=[run_id, batch], kwargs=kwargs, countdown=countdown)


def downgrades(location: str, target: str | None, sources: set[str | None]) -> list[str]:
    """The revisions among `sources` (and the template's) that going to `target` takes down."""
    script = scripts.script_directory(location)
    with owner_connection() as conn:
        sources = {*sources, read_revisions(conn, TEMPLATE_SCHEMA).get("alembic")}
    down = []
    for source in sorted(s for s in sources if s):
        try:
            if scripts.is_downgrade(script, source, target):
                down.append(source)
        except Exception:  # noqa: S112 - a revision this script directory lacks: not ours to judge
            continue
    return down


def run_downgrades(run: MigrationRun) -> list[str]:
    """What resuming `run` would take down: its target below the template or unfinished tenants.
    Nothing for a backfill run: it writes rows and changes no revision (its target names the
    revision whose BACKFILL it fills, which schemas at a later "head" are above)."""
    if run.operation == Operation.BACKFILL:
        return []
    try:
        target = scripts.resolve_revision(run.script_location, run.requested_revision)
    except LookupError:
        return []
    unfinished = run.steps.exclude(status__in=(StepStatus.SUCCEEDED, StepStatus.SKIPPED))
    sources = set(unfinished.values_list("revisions_before__alembic", flat=True).distinct())
    return downgrades(run.script_location, target, sources)


def _refuse_downgrade(
    location: str, target: str | None, sources: set[str | None], what: str
) -> None:
    down = downgrades(location, target, sources)
    if down:
        raise DowngradeNotConfirmed(
            f"{what} to {target or 'base'} downgrades schemas at {', '.join(down)}:"
            " confirm the downgrade to start it."
        )


def resume_run(run: MigrationRun, *, allow_downgrade: bool = False) -> MigrationRun:
    """Carry on a failed or cancelled run with its unfinished tenants only (a downgrade run
    only when `allow_downgrade`: the operator confirmed it)."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise RunConflict(f"Run {run.pk} is {run.status}; only failed or cancelled runs resume.")
    if not allow_downgrade and run_downgrades(run):
        raise DowngradeNotConfirmed(
            f"Run {run.pk} goes down to {run.requested_revision}: confirm the downgrade to resume it."
        )
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().get(pk=run.pk)
        run.steps.filter(
            Q(status=StepStatus.FAILED) | Q(status=StepStatus.PENDING, batch__isnull=False)
        ).update(status=StepStatus.PENDING, batch=None, error="")
        if not run.target:
            stage = Stage.SCHEMAS
        elif run.steps.filter(canary=True).exclude(status=StepStatus.SUCCEEDED).exists():
            stage = Stage.CANARY
        else:
            stage = Stage.ROLLOUT
        run.status = RunStatus.PENDING if stage == Stage.SCHEMAS else RunStatus.RUNNING
        run.stage = stage
        run.error = ""
        run.finished_at = None
        run.save(update_fields=["status", "stage", "error", "finished_at"])
        transaction.on_commit(lambda: enqueue_advance(run.pk))
    return run


def cancel_run(run: MigrationRun) -> MigrationRun:
    """Stop starting tenants; those in flight finish (each is one transaction)."""
    updated = MigrationRun.objects.filter(
        pk=run.pk, status__in=(RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED)
    ).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), error="Cancelled by an operator."
    )
    run.refresh_from_db()
    if not updated:
        raise RunConflict(f"Run {run.pk} is {run.status}; it cannot be cancelled.")
    return run


def retry_tenant(run: MigrationRun, slug: str) -> TenantMigration:
    """Migrate one failed tenant of the run again, on its own, whatever the run's budget."""
    step = run.steps.filter(tenant__slug=slug).first()
    if step is None:
        raise NotFound(f"Tenant {slug!r} is not part of run {run.pk}.")
    if step.status != StepStatus.FAILED:
        raise RunConflict(f"Tenant {slug!r} is {step.status} in run {run.pk}; only failed retry.")
    if run.status == RunStatus.CANCELLED:
        raise RunConflict(f"Run {run.pk} is cancelled; resume it instead.")
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().get(pk=run.pk)
        batch = run.batches_dispatched + 1
        MigrationRun.objects.filter(pk=run.pk).update(batches_dispatched=batch)
        TenantMigration.objects.filter(pk=step.pk).update(
            status=StepStatus.PENDING, batch=batch, error=""
        )
        step.refresh_from_db()  # as committed: pending (a worker may take it at once after)
        transaction.on_commit(lambda: enqueue_batch(run.pk, batch, force=True))
    return step


# --- Selectors ---------------------------------------------------------------------------------


def run_counts(run: MigrationRun) -> dict[str, int]:
    """Tenants (and shared backfill lanes) of the run by status, in one GROUP BY (the template
    and shared steps are not counted)."""
    rows = (
        TenantMigration.objects.filter(WORK_STEPS, run=run).values("status").annotate(n=Count("id"))
    )
    counts = {status: 0 for status in StepStatus.values}
    for row in rows:
        counts[row["status"]] = row["n"]
    counts["total"] = sum(counts[s] for s in StepStatus.values)
    counts["done"] = counts["succeeded"] + counts["skipped"] + counts["failed"]
    return counts


def rows_written(run: MigrationRun) -> int:
    """A backfill run's rows written so far, over every schema (0 for a migrate run)."""
    if run.operation != Operation.BACKFILL:
        return 0
    return sum(int(p.get("rows", 0)) for p in run.steps.values_list("progress", flat=True) if p)


def run_steps(
    run: MigrationRun, *, status: str = "", search: str = "", limit: int = STEP_LIMIT
) -> QuerySet[TenantMigration]:
    """The run's schema steps, platform schemas first, filtered by status and schema name."""
    platform_first = Case(When(tenant__isnull=True, then=Value(0)), default=Value(1))
    steps = run.steps.select_related("tenant").order_by(platform_first, "id")
    if status:
        steps = steps.filter(status=status)
    if search:
        steps = steps.filter(schema_name__icontains=search)
    return steps[:limit]


def step_state(step: TenantMigration) -> dict[str, Any]:
    return {
        "schema": step.schema_name,
        "tenant": step.tenant.slug if step.tenant else None,
        "canary": step.canary,
        "batch": step.batch,
        "status": step.status,
        "attempts": step.attempts,
        "started_at": step.started_at.isoformat() if step.started_at else None,
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
        "duration_ms": step.duration_ms,
        "revisions_before": step.revisions_before,
        "revisions_after": step.revisions_after,
        "error": step.error,
        "progress": step.progress,
    }


def run_state(
    run: MigrationRun, *, status: str = "", search: str = "", limit: int = STEP_LIMIT
) -> dict[str, Any]:
    """What the run page, the API and the CLI show: one shape everywhere."""
    counts = run_counts(run)
    progress = (
        counts["done"] / counts["total"] if counts["total"] else (1.0 if run.is_finished else 0.0)
    )
    return {
        "id": run.pk,
        "status": run.status,
        "stage": run.stage,
        "finished": run.is_finished,
        "requested_revision": run.requested_revision,
        "operation": run.operation,
        "options": run.options,
        "target": run.target,
        "tenants": run.tenant_slugs,
        "strategy": {
            "canary": run.canary_count,
            "concurrency": run.concurrency,
            "batch_size": run.batch_size,
            "max_failures": run.budget_label(),
            "lock_timeout": run.lock_timeout,
            "statement_timeout": run.statement_timeout,
            "verify": run.verify,
        },
        "created_by": started_by(run),
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
        "counts": counts,
        "progress": round(progress, 4),
        "rows_written": rows_written(run),
        "steps": [step_state(s) for s in run_steps(run, status=status, search=search, limit=limit)],
    }


def started_by(run: MigrationRun) -> str | None:
    """The operator who started the run, or where it was started from (the CLI's user@host)."""
    if run.created_by is not None:
        return str(run.created_by)
    return run.started_from or None
