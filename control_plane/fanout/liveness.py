"""Liveness of batch lanes: a Redis lease per (run, batch) that the task holding it renews.

A batch task takes its lane's lease before it migrates anything and a thread renews it every
HEARTBEAT_S while the task runs (also during one long statement); a SIGKILLed worker stops
renewing and the lease expires after LEASE_S. The reaper (`reaper.reap_dead_lanes`, beat every
few seconds) sends a lane again when tenants are running in it and nobody holds its lease, so a
lost worker costs seconds, not the stuck-run reaper's minutes. The lease also makes a second
delivery of a lane whose holder is alive (the broker's redelivery after the visibility timeout,
a re-send) return at once instead of migrating the same tenants side by side.

The leases themselves are control_plane.worker.leases (also those of import jobs and
onboardings). This module never decides what a batch migrates: batches and the orchestrator do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from control_plane.worker import leases

HEARTBEAT_S = leases.HEARTBEAT_S
LEASE_S = leases.LEASE_S
PLATFORM_LANE = 0  # the lease of a run's template and shared stage (batch numbers start at 1)


def lease_seconds() -> float:
    """How long a dead holder's lease outlives it (settings.LEASE_SECONDS)."""
    return leases.lease_seconds()


def lease_key(run_id: int, batch: int) -> str:
    return f"fanout:lane:{run_id}:{batch}"


def is_held(run_id: int, batch: int) -> bool:
    return leases.is_held(lease_key(run_id, batch))


def claim_resend(run_id: int, batch: int) -> bool:
    """True for one caller per LEASE_S: who re-sends a dead lane (reapers may run side by side)."""
    return leases.claim_once(f"fanout:resent:{run_id}:{batch}")


@contextmanager
def lane_lease(run_id: int, batch: int) -> Iterator[bool]:
    """Hold the lane's lease for the block, renewed by a thread; yields False (and holds
    nothing) when a live task already holds it."""
    with leases.lease(lease_key(run_id, batch)) as held:
        yield held
