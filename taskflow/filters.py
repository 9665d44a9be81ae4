"""The task list's filters: their shape, their parsing from query parameters, and the text
pattern of `q`. The list (taskflow.selectors) and the CSV export (taskflow.imports.export) both
filter by them, so the same parameters select the same tasks in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from taskflow.errors import InvalidInput
from taskflow.models import MAX_ID, TaskStatus


@dataclass(frozen=True)
class TaskFilters:
    status: tuple[str, ...] = ()
    project_id: int | None = None
    assignee_id: int | None = None
    due_before: date | None = None
    due_after: date | None = None
    q: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": list(self.status), "project": self.project_id, "assignee": self.assignee_id,
            "due_before": self.due_before, "due_after": self.due_after, "q": self.q,
        }  # fmt: skip


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
        due_before=_date(params, "due_before"),
        due_after=_date(params, "due_after"),
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


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name) or ""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(name, f"{name} must be a date such as 2026-11-30.") from exc


def _text(params: Mapping[str, str], name: str, *, max_length: int) -> str | None:
    value = params.get(name) or ""
    if len(value) > max_length:
        raise InvalidInput(name, f"{name} is at most {max_length} characters.")
    return value or None
