"""The canonical dict form of each TaskFlow row: what the API returns and what a 409/412 carries.

A representation holds dates and times as `date` and `datetime` objects; the API's renderer
(control_plane.http.renderers) writes them as RFC 3339 in C, UTC as "Z". Formatting them here, in
Python, cost more than a list page's query.

Each resource's fields are the columns its model declares SHOWN (`*_FIELDS`). An ORM entity is represented field by
field; a list page's rows, selected as exactly those columns in that order
(taskflow.selectors), are zipped with the names, which is several times cheaper than reading
attributes (the views zip them with the names of the request's API version at once:
taskflow.api_versions.row_shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from taskflow import due
from taskflow.models import (
    EVOLVING_AUDITED,
    SHOWN,
    Comment,
    Project,
    Task,
    TaskHistory,
    columns_with,
)

# The fields of each representation, in order: the columns the model declares SHOWN.
PROJECT_FIELDS = columns_with(Project, SHOWN)
TASK_FIELDS = columns_with(Task, SHOWN)
COMMENT_FIELDS = columns_with(Comment, SHOWN)
HISTORY_FIELDS = columns_with(TaskHistory, SHOWN)


def _fields(entity: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(entity, name) for name in names}


def project_repr(project: Project) -> dict[str, Any]:
    return _fields(project, PROJECT_FIELDS)


def task_repr(task: Task) -> dict[str, Any]:
    """The task's fields; `due_at` from whichever due column was read (taskflow.due)."""
    return {
        name: due_at_of_task(task) if name == "due_at" else getattr(task, name)
        for name in TASK_FIELDS
    }


def due_at_of_task(task: Task) -> datetime | None:
    """The task's due time from the due column its process read (the one the `tasks.due`
    switch names is loaded now if neither was): `due_date` is 00:00 UTC of its day."""
    unloaded = sa.inspect(task).unloaded
    if "due_at" in unloaded and ("due_date" not in unloaded or due.served() == due.DUE_DATE):
        return None if task.due_date is None else due.start_of(task.due_date)
    return task.due_at


def comment_repr(comment: Comment) -> dict[str, Any]:
    return _fields(comment, COMMENT_FIELDS)


def task_row_repr(row: Sequence[Any]) -> dict[str, Any]:
    """A row of TASK_FIELDS columns, in that order."""
    return dict(zip(TASK_FIELDS, row, strict=True))


# How a history row's `changes` is stored (its changes_format; migration 0003 of migrations_sqla).
CHANGES_AS_PAIRS = 1  # {"col": [old, new]}: the documented shape, as stored
CHANGES_AS_NEW_VALUES = 2  # an insert's new values once, {"col": new}: cheaper to write in bulk


# Columns an evolution under way records in history before the API shows them (EVOLVING_AUDITED).
UNSHOWN_HISTORY_COLUMNS = frozenset(c for cs in EVOLVING_AUDITED.values() for c in cs)


def history_changes(changes: dict[str, Any], changes_format: int) -> dict[str, Any]:
    """`changes` in the documented shape {"col": [old, new]}, whichever way the row stored it,
    without the columns the API does not show yet, a task's due time as `due_at`."""
    if changes_format == CHANGES_AS_PAIRS:
        shown = {c: v for c, v in changes.items() if c not in UNSHOWN_HISTORY_COLUMNS}
    elif changes_format == CHANGES_AS_NEW_VALUES:
        shown = {
            column: [None, value]
            for column, value in changes.items()
            if value is not None and column not in UNSHOWN_HISTORY_COLUMNS
        }
    else:
        raise ValueError(f"unknown history changes_format {changes_format!r}")
    return due_at_in_history(shown)


def due_at_in_history(changes: dict[str, Any]) -> dict[str, Any]:
    """A task's history entry shows its due time as `due_at`, however it was recorded: entries
    written before the `tasks_due_at` expand recorded only `due_date` (00:00 UTC of that day),
    those written between expand and contract both (the same time, by the sync trigger)."""
    if "due_date" not in changes:
        return changes
    recorded = changes.pop("due_date")
    if "due_at" not in changes:
        changes["due_at"] = [None if d is None else _start_of_day_text(d) for d in recorded]
    return changes


def _start_of_day_text(day: str) -> str:
    """00:00 UTC of a recorded date, as PostgreSQL's to_jsonb writes a timestamptz."""
    return f"{date.fromisoformat(day).isoformat()}T00:00:00+00:00"


def history_repr(entry: Any) -> dict[str, Any]:
    """A history entry (a row of HISTORY_FIELDS columns): `changes` in the documented shape."""
    return {
        "id": entry.id,
        "operation": entry.operation,
        "version": entry.version,
        "changes": history_changes(entry.changes, entry.changes_format),
        "actor_id": entry.actor_id,
        "request_id": entry.request_id,
        "at": entry.at,
    }


def represent(row: Any) -> dict[str, Any]:
    """Any TaskFlow row in its canonical form."""
    if isinstance(row, Task):
        return task_repr(row)
    if isinstance(row, Project):
        return project_repr(row)
    if isinstance(row, Comment):
        return comment_repr(row)
    raise TypeError(f"no representation for {type(row).__name__}")
