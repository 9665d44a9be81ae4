"""What the evolution app does when the fan-out tells it something (control_plane.fanout.signals).

A phase's run that succeeded is settled at once, in the process that finished it: the phase is
recorded, or the contract's next run starts, without waiting for a watcher's poll (the CLI's,
the admin page's, beat's). Settling stays idempotent (phases.settle), so a watcher that sees the
run first does it instead and this finds nothing to do.
"""

from __future__ import annotations

from typing import Any

from control_plane.evolution import phases
from control_plane.evolution.models import EvolutionRun


def settle_on_success(sender: object, *, run_id: int, **_kwargs: Any) -> None:
    """Settle the evolution whose phase ran as `run_id` (nothing when none did)."""
    del sender
    record = EvolutionRun.objects.select_related("evolution").filter(run_id=run_id).first()
    if record is not None:
        phases.settle(record.evolution)
