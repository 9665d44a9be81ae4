"""Which tasks column this release reads for due dates, told to the platform on every request.

This release of the API reads and writes `tasks.due_date` only: for the `tasks_due_at` evolution
(control_plane.evolution) it is old code. The API version middleware reports it through
tenants.switches on every tenant API request (a dict look-up; Redis at most every few seconds),
so the evolution's contract gate, which drops `due_date`, stays closed while any process running
this code serves traffic. The release that reads `due_at` reads the `tasks.due` switch instead.
"""

from __future__ import annotations

from tenants import switches

DUE_SWITCH = "tasks.due"
SERVED = "due_date"


def report_served() -> None:
    switches.report(DUE_SWITCH, SERVED)
