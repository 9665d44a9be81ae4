"""When a task is due: which tasks column this process reads, and the one conversion between them.

`tasks.due_date` (date) becomes `tasks.due_at` (timestamptz) by the `tasks_due_at` evolution
(control_plane.evolution): expand (both columns, a trigger keeping them in step), backfill,
switch, contract (`due_date` dropped). The application's shape is always `due_at` (the newest
API version shows it; older versions see its UTC date, taskflow.api_versions). What it reads
and writes underneath is the `tasks.due` read switch (tenants.switches), asked once per use:

- `due_date` (before the switch, or a process pinned to it during a rolling deploy): reads and
  writes `due_date` only, so it also works on a schema the expand has not reached; `due_at` is
  00:00 UTC of that day, and a time written is kept as its UTC day;
- `due_at` (after the switch): reads and writes `due_at` only; the expand's trigger keeps
  `due_date` in step while it exists, so the contract can drop it under running code.

Every use reports the value served (tenants.switches), so the contract gate stays closed while
any process still reads `due_date`. Never decides the switch itself: the control plane does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal

from tenants import switches

DUE_SWITCH = "tasks.due"
Column = Literal["due_date", "due_at"]
DUE_DATE: Final = "due_date"
DUE_AT: Final = "due_at"


def served() -> Column:
    """The tasks column this process reads for due times now (the `tasks.due` switch)."""
    return DUE_AT if switches.value(DUE_SWITCH, DUE_DATE) == DUE_AT else DUE_DATE


def report_served() -> None:
    """Tell the platform which column this process reads (at most every few seconds)."""
    served()


def start_of(day: date) -> datetime:
    """00:00 UTC of `day`: what a date written by an old client means as a due time."""
    return datetime.combine(day, time(), tzinfo=UTC)


def day_of(moment: datetime) -> date:
    """The UTC day of a due time: what an old client sees as its due date."""
    return moment.astimezone(UTC).date()


def after_day(day: date) -> datetime:
    """The latest due time still on `day` (UTC): `due_at > after_day(D)` is `due_date > D`.

    timestamptz holds microseconds, so this bound is exact."""
    return start_of(day + timedelta(days=1)) - timedelta(microseconds=1)
