"""Evolutions: start, cancel, resume and roll back their phases, check their gates, and what one shows.

The one service the admin, the operator API and the CLI call. Every phase is a fan-out run
(control_plane.fanout.runs.start_run) over the template, the shared schema and every tenant
schema, so it has the fan-out's leases, reaper, retries, budget, cancel and resume:

- expand: a run to the expand revision, or to "head" when that follows it (column, sync
  trigger, history column list, indexes built CONCURRENTLY);
- backfill: a backfill run of the expand revision's BACKFILL (bounded batches, throttle,
  progress per schema, resumable from its recorded keyset position); the shared schema's rows
  are split into lanes (`lanes`, default the concurrency) that the workers fill side by side;
- switch: a last backfill run (a sweep that finds nothing to write when the trigger did its
  job, and proves every schema, including tenants created since, is filled), then the read
  switch flips to the new shape; processes see it within a second (tenants.switches);
- contract: behind a gate (switch done, every schema filled by the switch's sweep, no process
  served the old shape within the report TTL), unless an operator overrides it, confirmed;
  runs to each contract revision in turn (indexes dropped CONCURRENTLY, then the column).

Rollbacks: an expand (before the switch) is a confirmed downgrade run to the expand's parent;
a switch flips the read switch back. A phase's run finishing is acted on by `settle` exactly
once (under the evolution's row lock), from whichever reader sees it first: the CLI, the admin
page, the API, or beat's `settle_evolutions`. Starting a phase that is running returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q

from control_plane.evolution.catalog import CATALOG, Definition
from control_plane.evolution.models import PHASE_ORDER, Action, Evolution, EvolutionRun, Phase
from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, Operation, RunStatus, StepStatus
from tenants import switches
from tenants.models import Isolation, Tenant
from tenants.problems import NotFound, Problem

DEFAULT_OPTIONS: dict[str, Any] = {
    "concurrency": 2,
    "batch_size": 50,
    "batch_rows": 1000,
    "throttle_ms": 0,
    "lanes": 0,  # of the shared schema's backfill; 0: as many as the concurrency
    "lock_timeout": "2s",
    "statement_timeout": "1min",
    "max_failures": "0",
}
NEEDS = {
    Phase.EXPAND: "",
    Phase.BACKFILL: Phase.EXPAND,
    Phase.SWITCH: Phase.BACKFILL,
    Phase.CONTRACT: Phase.SWITCH,
}


class EvolutionConflict(Problem):
    status = 409
    title = "Evolution conflict"


class GateClosed(EvolutionConflict):
    title = "Evolution gate closed"


class NotConfirmed(EvolutionConflict):
    title = "Evolution step not confirmed"


class InvalidEvolution(Problem):
    status = 400
    title = "Invalid evolution"


@dataclass(frozen=True)
class Gate:
    open: bool
    reasons: tuple[str, ...]


def definition(evolution: Evolution) -> Definition:
    return CATALOG[evolution.name]


def get_evolution(name: str) -> Evolution:
    """The evolution called `name`, recorded on first use (any catalogued name)."""
    if name not in CATALOG:
        raise NotFound(f"No evolution {name!r}; known: {', '.join(sorted(CATALOG))}.")
    evolution, _ = Evolution.objects.get_or_create(
        name=name, defaults={"options": dict(DEFAULT_OPTIONS)}
    )
    return evolution


def set_options(evolution: Evolution, options: dict[str, Any]) -> Evolution:
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise InvalidEvolution(f"Unknown options: {', '.join(sorted(unknown))}.")
    evolution.options = {**DEFAULT_OPTIONS, **evolution.options, **options}
    evolution.save(update_fields=["options", "updated_at"])
    return evolution


# --- Starting phases ---------------------------------------------------------------------------


def start_phase(
    evolution: Evolution,
    phase: str,
    *,
    override: bool = False,
    confirm: bool = False,
    created_by: User | None = None,
) -> EvolutionRun | None:
    """Start `phase` (idempotent: a running phase is returned, a finished one is a no-op).

    The contract's gate may be overridden only with `override` and `confirm` both: the operator
    said so and confirmed it. Returns the fan-out record, or None when nothing had to run.
    """
    if phase not in PHASE_ORDER:
        raise InvalidEvolution(f"phase is one of {', '.join(PHASE_ORDER)}, not {phase!r}.")
    settle(evolution)
    with transaction.atomic():
        evolution = Evolution.objects.select_for_update().get(pk=evolution.pk)
        current = latest(evolution)
        if current is not None and not current.run.is_finished:
            if (current.phase, current.action) == (phase, Action.APPLY):
                return current
            raise EvolutionConflict(
                f"{evolution.name} is running {current.action} {current.phase}"
                f" (run {current.run_id}); wait for it or cancel it."
            )
        if _done(evolution, phase):
            return None
        if evolution.completed != NEEDS[Phase(phase)]:
            raise EvolutionConflict(
                f"{phase} follows {NEEDS[Phase(phase)] or 'nothing'};"
                f" {evolution.name} has completed {evolution.completed or 'no phase'}."
            )
        if (
            current is not None
            and (current.phase, current.action) == (phase, Action.APPLY)
            and current.run.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        ):
            raise EvolutionConflict(
                f"{phase} stopped ({current.run.status}, run {current.run_id}): resume it."
            )
        if phase == Phase.CONTRACT:
            gate = contract_gate(evolution)
            if not gate.open and not override:
                raise GateClosed("Contract gate closed: " + "; ".join(gate.reasons))
            if override and not gate.open and not confirm:
                raise NotConfirmed(
                    "Overriding the contract gate drops what old code reads: confirm it."
                )
        else:
            gate = Gate(True, ())
        return _start(
            evolution, phase, Action.APPLY, 0, created_by, override=override and not gate.open
        )


def rollback(
    evolution: Evolution, phase: str, *, confirm: bool = False, created_by: User | None = None
) -> EvolutionRun | None:
    """Undo the expand (a confirmed downgrade fan-out) or the switch (the read switch back)."""
    settle(evolution)
    if not confirm:
        raise NotConfirmed(f"Rolling back the {phase} of {evolution.name}: confirm it.")
    definition_ = definition(evolution)
    with transaction.atomic():
        evolution = Evolution.objects.select_for_update().get(pk=evolution.pk)
        current = latest(evolution)
        if current is not None and not current.run.is_finished:
            if (current.phase, current.action) == (phase, Action.ROLLBACK):
                return current
            raise EvolutionConflict(
                f"{evolution.name} is running {current.action} {current.phase}: cancel it first."
            )
        if phase == Phase.SWITCH:
            if evolution.completed != Phase.SWITCH:
                raise EvolutionConflict(
                    f"Only a completed switch rolls back; {evolution.name} has completed"
                    f" {evolution.completed or 'no phase'}."
                )
            switches.set_value(definition_.switch, definition_.old_value)
            evolution.completed = Phase.BACKFILL
            evolution.save(update_fields=["completed", "updated_at"])
            return None
        if phase != Phase.EXPAND:
            raise InvalidEvolution("Only the expand and the switch roll back.")
        if evolution.completed not in (Phase.EXPAND, Phase.BACKFILL, ""):
            raise EvolutionConflict(
                f"The expand rolls back before the switch only; {evolution.name} has completed"
                f" {evolution.completed}: roll the switch back first."
            )
        if evolution.completed == "" and (current is None or current.phase != Phase.EXPAND):
            return None
        return _start(evolution, Phase.EXPAND, Action.ROLLBACK, 0, created_by)


def _start(
    evolution: Evolution,
    phase: str,
    action: str,
    step: int,
    created_by: User | None,
    *,
    override: bool = False,
) -> EvolutionRun:
    definition_ = definition(evolution)
    options = {**DEFAULT_OPTIONS, **evolution.options}
    common: dict[str, Any] = {
        "concurrency": int(options["concurrency"]),
        "batch_size": int(options["batch_size"]),
        "max_failures": options["max_failures"],
        "lock_timeout": str(options["lock_timeout"]),
        "statement_timeout": str(options["statement_timeout"]),
        "created_by": created_by,
        "canary": 1,
    }
    if action == Action.ROLLBACK:
        run = runs.start_run(to=definition_.before(), allow_downgrade=True, **common)
    elif phase == Phase.EXPAND:
        run = runs.start_run(to=definition_.expand_target(), **common)
    elif phase in (Phase.BACKFILL, Phase.SWITCH):
        run = runs.start_run(
            to=definition_.expand,
            operation=Operation.BACKFILL,
            options={
                "batch_rows": int(options["batch_rows"]),
                "throttle_ms": int(options["throttle_ms"]),
                "lanes": int(options.get("lanes") or 0),
            },
            **common,
        )
    else:
        run = runs.start_run(to=definition_.contract[step], **common)
    return EvolutionRun.objects.create(
        evolution=evolution, phase=phase, action=action, step=step, run=run, override=override
    )


def _done(evolution: Evolution, phase: str) -> bool:
    if not evolution.completed:
        return False
    return PHASE_ORDER.index(Phase(evolution.completed)) >= PHASE_ORDER.index(Phase(phase))


# --- Runs ending -------------------------------------------------------------------------------


def settle(evolution: Evolution) -> Evolution:
    """Act once on the newest run's success: record the phase, or start the phase's next run.

    Returns the evolution as the database holds it afterwards (callers may hold a stale copy).
    """
    evolution.refresh_from_db()
    newest = latest(evolution)
    if newest is None or newest.settled or newest.run.status != RunStatus.SUCCEEDED:
        return evolution
    definition_ = definition(evolution)
    with transaction.atomic():
        evolution = Evolution.objects.select_for_update().get(pk=evolution.pk)
        newest = latest(evolution)
        if newest is None or newest.settled or newest.run.status != RunStatus.SUCCEEDED:
            return evolution
        EvolutionRun.objects.filter(pk=newest.pk).update(settled=True)
        if newest.action == Action.ROLLBACK:
            evolution.completed = ""
        elif newest.phase == Phase.CONTRACT and newest.step + 1 < len(definition_.contract):
            _start(evolution, Phase.CONTRACT, Action.APPLY, newest.step + 1, newest.run.created_by)
            return evolution
        else:
            if newest.phase == Phase.SWITCH:
                switches.set_value(definition_.switch, definition_.new_value)
            evolution.completed = newest.phase
        evolution.save(update_fields=["completed", "updated_at"])
    return evolution


def settle_all() -> list[str]:
    """Beat: settle every evolution whose newest run finished (also with nobody watching)."""
    settled = []
    for evolution in Evolution.objects.all():
        before = evolution.completed
        if settle(evolution).completed != before:
            settled.append(evolution.name)
    return settled


def cancel(evolution: Evolution) -> EvolutionRun:
    """Cancel the running phase's fan-out: schemas in flight finish, no other starts."""
    current = latest(evolution)
    if current is None or current.run.is_finished:
        raise EvolutionConflict(f"{evolution.name} is not running a phase.")
    runs.cancel_run(current.run)
    return current


def resume(evolution: Evolution) -> EvolutionRun:
    """Resume the stopped (failed or cancelled) fan-out of the newest phase where it stopped."""
    current = latest(evolution)
    if current is None or current.run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise EvolutionConflict(f"{evolution.name} has no stopped phase to resume.")
    runs.resume_run(current.run, allow_downgrade=current.action == Action.ROLLBACK)
    return current


def latest(evolution: Evolution) -> EvolutionRun | None:
    return (
        EvolutionRun.objects.select_related("run", "run__created_by")
        .filter(evolution=evolution)
        .order_by("-id")
        .first()
    )


# --- Gates -------------------------------------------------------------------------------------


def contract_gate(evolution: Evolution) -> Gate:
    """Whether the contract may start: switched, every schema filled, no old code serving."""
    evolution.refresh_from_db(fields=["completed"])
    definition_ = definition(evolution)
    reasons = []
    if evolution.completed != Phase.SWITCH:
        reasons.append(f"the switch is not done (completed: {evolution.completed or 'nothing'})")
    else:
        unfilled = schemas_not_filled(evolution)
        if unfilled:
            reasons.append(
                f"{len(unfilled)} schemas not past the backfill: {', '.join(unfilled[:5])}"
            )
    try:
        old = switches.served(definition_.switch, definition_.old_value)
    except Exception as exc:
        old = [f"unknown ({type(exc).__name__})"]
    if old:
        reasons.append(
            f"{len(old)} processes served {definition_.old_value} in the last"
            f" {switches.SERVED_TTL_S}s: {', '.join(old[:5])}"
        )
    return Gate(not reasons, tuple(reasons))


def schemas_not_filled(evolution: Evolution) -> list[str]:
    """Tenant schemas the switch's sweep did not finish (tenants onboarded after it are clones
    of the expanded template, written through the trigger: filled from the start)."""
    sweep = (
        EvolutionRun.objects.filter(evolution=evolution, phase=Phase.SWITCH, action=Action.APPLY)
        .order_by("-id")
        .first()
    )
    if sweep is None:
        return ["(no switch sweep)"]
    finished = sweep.run.steps.filter(status__in=(StepStatus.SUCCEEDED, StepStatus.SKIPPED))
    missing = (
        Tenant.objects.filter(isolation=Isolation.SCHEMA, created_at__lt=sweep.run.created_at)
        .exclude(schema_name="public")
        .exclude(schema_name__in=finished.values("schema_name"))
        .filter(Q(status__in=("active", "suspended", "archived")))
        .values_list("schema_name", flat=True)
    )
    return list(missing)


# --- What an evolution shows -------------------------------------------------------------------


def evolution_state(evolution: Evolution) -> dict[str, Any]:
    """What the admin page, the API and the CLI show: one shape everywhere."""
    evolution = settle(evolution)
    definition_ = definition(evolution)
    current = latest(evolution)
    history = list(
        EvolutionRun.objects.select_related("run").filter(evolution=evolution).order_by("id")
    )
    # A run that succeeded but is not settled yet (read between settle() and here) still runs.
    running = current is not None and (
        not current.run.is_finished
        or (current.run.status == RunStatus.SUCCEEDED and not current.settled)
    )
    if current is None:
        status = "idle"
    elif running:
        status = "running"
    elif current.run.status == RunStatus.SUCCEEDED:
        status = "idle"
    else:
        status = current.run.status
    gate = contract_gate(evolution)
    return {
        "name": evolution.name,
        "title": definition_.title,
        "completed": evolution.completed,
        "status": status,
        "finished": not running,
        "phases": [
            {
                "phase": phase,
                "done": _done(evolution, phase),
                "active": current is not None and current.phase == phase and running,
            }
            for phase in PHASE_ORDER
        ],
        "switch": {
            "name": definition_.switch,
            "value": switches.stored(definition_.switch) or definition_.old_value,
        },
        "contract_gate": {"open": gate.open, "reasons": list(gate.reasons)},
        "options": {**DEFAULT_OPTIONS, **evolution.options},
        "current": _run_summary(current) if current else None,
        "runs": [_run_summary(r, brief=True) for r in history],
    }


def _run_summary(record: EvolutionRun, *, brief: bool = False) -> dict[str, Any]:
    run: MigrationRun = record.run
    out: dict[str, Any] = {
        "phase": record.phase,
        "action": record.action,
        "step": record.step,
        "override": record.override,
        "run": run.pk,
        "status": run.status,
        "error": run.error,
    }
    if not brief:
        state = runs.run_state(run, limit=50)
        out.update(
            counts=state["counts"],
            progress=state["progress"],
            rows_written=state["rows_written"],
            stage=state["stage"],
            steps=state["steps"],
        )
    return out
