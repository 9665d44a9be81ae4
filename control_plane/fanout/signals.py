"""Signals of the fan-out: what other apps may hear about a run without the fan-out knowing them.

`run_succeeded` is sent once a run's success is committed, from the process that settled it (a
worker, usually), so whoever started the run for a purpose of its own (an evolution's phase) can
act on it at once instead of at its watcher's next poll. Receivers must not raise into the
fan-out: a failed receiver is logged and its owner's own watcher (beat) acts later.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

log = logging.getLogger(__name__)

# Sent with `run_id` (the MigrationRun's primary key), after the commit.
run_succeeded = Signal()


def send_run_succeeded(run_id: int) -> None:
    """Tell the receivers; their failures are logged, never raised."""
    for receiver, result in run_succeeded.send_robust(sender=None, run_id=run_id):
        if isinstance(result, Exception):
            log.warning(
                "run %s: receiver %r failed",
                run_id,
                receiver,
                exc_info=(type(result), result, result.__traceback__),
            )
