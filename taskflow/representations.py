"""The canonical dict form of each TaskFlow row: what the API returns and what a 409/412 carries."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from taskflow.models import Comment, HistoryColumns, Project, Task


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def project_repr(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "key": project.key,
        "name": project.name,
        "description": project.description,
        "created_at": _iso(project.created_at),
        "updated_at": _iso(project.updated_at),
        "deleted_at": _iso(project.deleted_at),
        "version": project.version,
    }


def task_repr(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "project_id": task.project_id,
        "external_id": task.external_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": task.priority,
        "assignee_id": task.assignee_id,
        "due_date": _iso(task.due_date),
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "deleted_at": _iso(task.deleted_at),
        "version": task.version,
    }


def comment_repr(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.id,
        "task_id": comment.task_id,
        "author_id": comment.author_id,
        "body": comment.body,
        "created_at": _iso(comment.created_at),
        "updated_at": _iso(comment.updated_at),
        "version": comment.version,
    }


# How a history row's `changes` is stored (its changes_format; migration 0003 of migrations_sqla).
CHANGES_AS_PAIRS = 1  # {"col": [old, new]}: the documented shape, as stored
CHANGES_AS_NEW_VALUES = 2  # an insert's new values once, {"col": new}: cheaper to write in bulk


def history_changes(changes: dict[str, Any], changes_format: int) -> dict[str, Any]:
    """`changes` in the documented shape {"col": [old, new]}, whichever way the row stored it."""
    if changes_format == CHANGES_AS_PAIRS:
        return changes
    if changes_format == CHANGES_AS_NEW_VALUES:
        return {column: [None, value] for column, value in changes.items() if value is not None}
    raise ValueError(f"unknown history changes_format {changes_format!r}")


def history_repr(entry: HistoryColumns) -> dict[str, Any]:
    return {
        "id": entry.id,
        "operation": entry.operation,
        "version": entry.version,
        "changes": history_changes(entry.changes, entry.changes_format),
        "actor_id": entry.actor_id,
        "request_id": entry.request_id,
        "at": _iso(entry.at),
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
