"""The task list's filters: their shape, their parsing from query parameters, and the text
pattern of `q`. The list (taskflow.selectors) and the CSV export (taskflow.imports.export) both
filter by them, so the same parameters select the same tasks in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from taskflow import due
from taskflow.errors import InvalidInput, Unprocessable
from taskflow.models import MAX_ID, TaskStatus

# A due bound: a date (before that day begins / after it ends, in UTC) or an exact time.
Moment = date | datetime


@dataclass(frozen=True)
class TaskFilters:
    status: tuple[str, ...] = ()
    project_id: int | None = None
    assignee_id: int | None = None
    due_before: Moment | None = None
    due_after: Moment | None = None
    q: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": list(self.status), "project": self.project_id, "assignee": self.assignee_id,
            "due_before": self.due_before, "due_after": self.due_after, "q": self.q,
        }  # fmt: skip

    def due_bounds(self, column: due.Column) -> tuple[Moment | None, Moment | None]:
        """`due_before` and `due_after` as values of `column`, compared with `<` and `>`.

        A date bound means whole UTC days (before D: due on a day before D; after D: on a day
        after D), a time bound is exact; on `due_date` a time bound becomes the days it
        admits, which is exact because a `due_date` task is due at 00:00 UTC."""
        before, after = self.due_before, self.due_after
        if column == due.DUE_AT:
            return (
                None if before is None else _as_moment(before, due.start_of),
                None if after is None else _as_moment(after, due.after_day),
            )
        return (
            None if before is None else _first_day_not_before(before),
            None if after is None else _day(after),
        )


def _as_moment(value: Moment, of_day: Any) -> datetime:
    return value if isinstance(value, datetime) else of_day(value)


def _day(value: Moment) -> date:
    return due.day_of(value) if isinstance(value, datetime) else value


def _first_day_not_before(value: Moment) -> date:
    """The first day whose 00:00 UTC is not before `value`: `due_date < it` is `due_at < value`."""
    if not isinstance(value, datetime):
        return value
    day = due.day_of(value)
    return day if due.start_of(day) == value else day + timedelta(days=1)


def contains_pattern(text: str) -> str:
    """An ILIKE pattern (escape character /) matching values that contain `text` literally."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def task_filters(params: Mapping[str, str]) -> TaskFilters:
    """The task list's filters from query parameters; an empty parameter filters nothing.

    Plain parsing, like the sort and limit: a DRF serializer's field machinery would cost more,
    on every list request, than the handful of conversions it stands for.
    """
    return TaskFilters(
        status=_statuses(params.get("status") or ""),
        project_id=_positive_int(params, "project"),
        assignee_id=_positive_int(params, "assignee"),
        due_before=_moment(params, "due_before"),
        due_after=_moment(params, "due_after"),
        q=_text(params, "q", max_length=200),
    )


def _statuses(value: str) -> tuple[str, ...]:
    statuses = tuple(s.strip() for s in value.split(",") if s.strip())
    allowed = {s.value for s in TaskStatus}
    bad = [s for s in statuses if s not in allowed]
    if bad:
        raise InvalidInput(
            "status", f"Unknown status {bad[0]!r}; choose from {', '.join(sorted(allowed))}."
        )
    return statuses


def _positive_int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name) or ""
    if not value:
        return None
    if (
        not (value.isascii() and value.isdigit() and len(value) <= 19)
        or not 1 <= int(value) <= MAX_ID
    ):
        raise InvalidInput(name, f"{name} must be a positive integer.")
    return int(value)


def _moment(params: Mapping[str, str], name: str) -> Moment | None:
    """A date (YYYY-MM-DD) or an RFC 3339 date-time with its offset."""
    value = params.get(name) or ""
    if not value:
        return None
    return parse_moment(value, name)


def parse_moment(value: str, name: str) -> Moment:
    """`value` as a date (YYYY-MM-DD) or an RFC 3339 date-time with its offset, else a 400."""
    invalid = InvalidInput(
        name, f"{name} must be a date such as 2026-11-30 or a time such as 2026-11-30T09:00:00Z."
    )
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        if value[4:10] == "-02-29":  # well-formed, but that year has no February 29th
            raise Unprocessable(name, f"{value[:10]} is not a day of the calendar.") from exc
        raise invalid from exc
    if value[10:11] not in ("T", "t"):
        raise invalid
    if moment.tzinfo is None:
        raise InvalidInput(name, f"{name} must name its offset from UTC, such as Z or +01:00.")
    return moment


def _text(params: Mapping[str, str], name: str, *, max_length: int) -> str | None:
    value = params.get(name) or ""
    if len(value) > max_length:
        raise InvalidInput(name, f"{name} is at most {max_length} characters.")
    return value or None
