"""The stuck-run reaper: re-sends the messages of runs that have stopped moving.

A run moves by messages: advance_run and one migrate_batch per batch in flight. Workers that die
are covered by late acknowledgement (the broker delivers the message again), but a message lost
by the broker itself (Redis restarted without persistence, a purged queue) would leave the run
pending or running forever. The beat calls `reap_stuck_runs` every minute; a run with no
activity for FANOUT_STUCK_AFTER_S (and at least twice its statement_timeout, so a long
migration of one large schema is not mistaken for a lost message) gets its advance and its
in-flight batches sent again. Both are idempotent, so a run that was only slow loses nothing.

A worker that dies (SIGKILL, a lost machine) is found much sooner: `reap_dead_lanes`, on beat
every few seconds, re-sends each lane with running tenants whose lease
(control_plane.fanout.liveness) nobody renews any more.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from control_plane.fanout import liveness, runs
from control_plane.fanout.models import MigrationRun, RunStatus, Stage, StepStatus, TenantMigration

log = logging.getLogger(__name__)

UNITS_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "": 0.001}  # bare numbers are ms


def timeout_seconds(value: str) -> float:
    """A PostgreSQL timeout setting as runs accept it (500ms, 5s, 5min, 1h, or ms) in seconds."""
    match = runs.TIMEOUT.fullmatch(value)
    if match is None:
        raise ValueError(f"not a timeout: {value!r}")
    unit = match.group(1) or ""
    return int(value.removesuffix(unit)) * UNITS_S[unit]


def stuck_after(run: MigrationRun) -> timedelta:
    floor = float(settings.FANOUT_STUCK_AFTER_S)
    return timedelta(seconds=max(floor, 2 * timeout_seconds(run.statement_timeout)))


def last_activity(run: MigrationRun) -> datetime:
    """The latest moment anything happened to the run or one of its steps."""
    steps = run.steps.aggregate(started=Max("started_at"), finished=Max("finished_at"))
    moments = [run.created_at, run.started_at, run.nudged_at, *steps.values()]
    return max(m for m in moments if m is not None)


def reap_stuck_runs(now: datetime | None = None) -> list[int]:
    """Nudge every unfinished run that has stopped moving; the ids of those nudged."""
    now = now or timezone.now()
    nudged = []
    unfinished = MigrationRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING))
    for run in unfinished.order_by("id"):
        since = last_activity(run)
        if now - since < stuck_after(run):
            continue
        claimed = MigrationRun.objects.filter(
            pk=run.pk, status=run.status, nudged_at=run.nudged_at
        ).update(nudged_at=now)
        if not claimed:  # another reaper, or the run itself, got there first
            continue
        in_flight = run.steps.filter(
            batch__isnull=False, status__in=(StepStatus.PENDING, StepStatus.RUNNING)
        ).values_list("batch", flat=True)
        batches = sorted({batch for batch in in_flight if batch is not None})
        log.warning(
            "migration run %s stuck since %s: re-sending advance and batches %s",
            run.pk,
            since,
            batches,
        )
        for batch in batches:
            runs.enqueue_batch(run.pk, batch)
        runs.enqueue_advance(run.pk)
        nudged.append(run.pk)
    return nudged


def reap_dead_lanes() -> list[tuple[int, int]]:
    """Re-send every lane of a running run that has running tenants and no live lease;
    the (run, batch) pairs sent."""
    lanes = (
        MigrationRun.objects.filter(
            status=RunStatus.RUNNING, steps__status=StepStatus.RUNNING, steps__batch__isnull=False
        )
        .values_list("id", "steps__batch")
        .distinct()
    )
    sent: list[tuple[int, int]] = []
    for run_id, batch in sorted((r, b) for r, b in lanes if b is not None):
        if liveness.is_held(run_id, batch) or not liveness.claim_resend(run_id, batch):
            continue
        log.warning(
            "migration run %s: batch %s has no live worker; sending it again", run_id, batch
        )
        runs.enqueue_batch(run_id, batch)
        sent.append((run_id, batch))
    sent += _reap_platform_stage()
    return sent


def orphan_lane_of(run_id: int, *, redelivered: bool) -> int | None:
    """orphan_lane for an advance_run message that found no new work. When the message is a
    redelivery, its worker died, perhaps in a lane whose lease has not lapsed yet (the broker
    can deliver again sooner than the lease expires): with no orphan to take now, the advance
    looks once more a lease length later, so that lane does not wait for beat's reaper."""
    lane = orphan_lane(run_id)
    if lane is None and redelivered:
        runs.enqueue_advance(run_id, countdown=liveness.lease_seconds(), looked_again=True)
    return lane


def orphan_lane(run_id: int) -> int | None:
    """A lane of the running run with running tenants and no live lease, claimed as the
    reaper claims a re-send, for the caller to run itself: a redelivered advance_run whose
    worker died in the lane it had adopted. None when every such lane has a live holder."""
    lanes = (
        TenantMigration.objects.filter(
            run_id=run_id,
            run__status=RunStatus.RUNNING,
            status=StepStatus.RUNNING,
            batch__isnull=False,
        )
        .values_list("batch", flat=True)
        .distinct()
    )
    for batch in sorted(b for b in lanes if b is not None):
        if liveness.is_held(run_id, batch) or not liveness.claim_resend(run_id, batch):
            continue
        log.warning("migration run %s: batch %s has no live worker; running it here", run_id, batch)
        return batch
    return None


def _reap_platform_stage() -> list[tuple[int, int]]:
    """Re-send the advance of runs whose template or shared schema is being migrated by nobody
    (the platform stage's lease, lane 0, expired): (run, 0) pairs sent."""
    stalled = (
        MigrationRun.objects.filter(
            status=RunStatus.RUNNING,
            stage=Stage.SCHEMAS,
            steps__tenant__isnull=True,
            steps__status=StepStatus.RUNNING,
        )
        .values_list("id", flat=True)
        .distinct()
    )
    sent = []
    for run_id in sorted(stalled):
        if liveness.is_held(run_id, liveness.PLATFORM_LANE) or not liveness.claim_resend(
            run_id, liveness.PLATFORM_LANE
        ):
            continue
        log.warning("migration run %s: its platform stage has no live worker; advancing", run_id)
        runs.enqueue_advance(run_id)
        sent.append((run_id, liveness.PLATFORM_LANE))
    return sent
