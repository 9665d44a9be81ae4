"""Settings of a web process that still runs the release before the `tasks.due` switch: it reads
and writes `tasks.due_date` whatever the switch says (tenants.switches' READ_SWITCH_PINS), as a
process not yet replaced in a rolling deploy does. Used by the proof-under-load test."""

from control_plane.settings import *  # noqa: F403

READ_SWITCH_PINS = {"tasks.due": "due_date"}
