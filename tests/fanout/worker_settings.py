"""Settings of the fan-out tests' workers: the platform's, with kombu's sweep of unacknowledged
messages run every second (by default it scans on every tenth 10-second tick, so a killed
worker's messages would come back up to ~100 s after the visibility timeout)."""

from control_plane.settings import *  # noqa: F403
from control_plane.settings import CELERY_BROKER_TRANSPORT_OPTIONS

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

# Lanes replace their connection every few schemas, so every worker test crosses a replacement
# (the default, 100, is more than most of these runs migrate).
FANOUT_RECYCLE_SCHEMAS = 7
