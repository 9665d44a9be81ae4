"""Selectors: everything TaskFlow reads. Each takes a bound session and returns rows or pages.

A single row is read as an ORM entity (services go on to change it). A list page is read as
plain rows of the representation's columns (taskflow.representations, `*_FIELDS`), selected from
the table: no entity, identity map or attribute instrumentation per row, which cost a list
request more than its query did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from taskflow.errors import NotFound
from taskflow.filters import TaskFilters, contains_pattern
from taskflow.models import DUE_DATE_SORT, Comment, Project, Task, TaskHistory
from taskflow.pagination import (
    CursorScope,
    Listing,
    Page,
    SortField,
    filters_fingerprint,
    paginate,
    parse_sort,
)
from taskflow.representations import COMMENT_FIELDS, HISTORY_FIELDS, PROJECT_FIELDS, TASK_FIELDS

# The tables list pages read from (Core); single rows are read through the ORM classes.
PROJECTS: sa.Table = Project.__table__  # type: ignore[assignment]
TASKS: sa.Table = Task.__table__  # type: ignore[assignment]
COMMENTS: sa.Table = Comment.__table__  # type: ignore[assignment]
TASK_HISTORY: sa.Table = TaskHistory.__table__  # type: ignore[assignment]


# A sort field's expression takes the table's columns (`table.c`); value_of takes a page's row.
def _timestamp(name: str) -> SortField:
    return SortField(
        name, lambda c: getattr(c, name), sa.DateTime(timezone=True), lambda r: getattr(r, name)
    )


TASK_SORTS: dict[str, SortField] = {
    "created_at": _timestamp("created_at"),
    "updated_at": _timestamp("updated_at"),
    "due_date": SortField(
        "due_date", lambda c: DUE_DATE_SORT, sa.Date(), lambda r: r.due_date or "infinity"
    ),
    "priority": SortField(
        "priority", lambda c: c.priority, sa.SmallInteger(), lambda r: r.priority
    ),
    "title": SortField("title", lambda c: c.title, sa.String(), lambda r: r.title),
}
PROJECT_SORTS: dict[str, SortField] = {"created_at": _timestamp("created_at")}
COMMENT_SORTS: dict[str, SortField] = {"created_at": _timestamp("created_at")}


@dataclass(frozen=True)
class ListQuery:
    """A list request, parsed: sort, cursor, limit, and whether deleted rows are included."""

    sort: str | None = None
    cursor: str | None = None
    limit: int = 50
    include_deleted: bool = False


def _live(entity: Any, tenant_id: int, include_deleted: bool) -> sa.Select[Any]:
    statement = sa.select(entity).where(entity.tenant_id == tenant_id)
    return statement if include_deleted else statement.where(entity.deleted_at.is_(None))


def _get(
    session: Session, entity: Any, tenant_id: int, row_id: int, include_deleted: bool, label: str
) -> Any:
    row = session.scalars(
        _live(entity, tenant_id, include_deleted).where(entity.id == row_id)
    ).first()
    if row is None:
        raise NotFound(f"No {label} {row_id}.")
    return row


def project_get(
    *, session: Session, tenant_id: int, project_id: int, include_deleted: bool = False
) -> Project:
    project: Project = _get(session, Project, tenant_id, project_id, include_deleted, "project")
    return project


def task_get(
    *, session: Session, tenant_id: int, task_id: int, include_deleted: bool = False
) -> Task:
    task: Task = _get(session, Task, tenant_id, task_id, include_deleted, "task")
    return task


def _rows_of(table: sa.Table, fields: tuple[str, ...], include_deleted: bool) -> sa.Select[Any]:
    """The tenant's rows of `table` (parameter `tenant_id`) as `fields` columns: Core, no ORM."""
    statement = sa.select(*(table.c[name] for name in fields)).where(
        table.c.tenant_id == sa.bindparam("tenant_id")
    )
    return statement if include_deleted else statement.where(table.c.deleted_at.is_(None))


def _projects(include_deleted: bool) -> sa.Select[Any]:
    return _rows_of(PROJECTS, PROJECT_FIELDS, include_deleted)


def project_list(*, session: Session, tenant_id: int, query: ListQuery) -> Page[sa.Row[Any]]:
    """A page of the tenant's projects, as rows of PROJECT_FIELDS."""
    sort = parse_sort(query.sort, PROJECT_SORTS, "created_at")
    scope = CursorScope(
        tenant_id, sort.text, filters_fingerprint({"deleted": query.include_deleted}), "projects"
    )
    return paginate(
        session,
        Listing(_projects, query.include_deleted, {"tenant_id": tenant_id}),
        table=PROJECTS,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


# Which of TaskFilters' parameters a task list has, in this order (with include_deleted first).
TASK_FILTER_PARAMS = ("status", "project_id", "assignee_id", "due_before", "due_after", "q")


def _tasks(shape: tuple[bool, ...]) -> sa.Select[Any]:
    """Tasks with the filters `shape` names, each a parameter named as in TASK_FILTER_PARAMS."""
    include_deleted, *present = shape
    given = {name for name, there in zip(TASK_FILTER_PARAMS, present, strict=True) if there}
    c = TASKS.c
    conditions = {
        "status": lambda: c.status.in_(sa.bindparam("status", expanding=True)),
        "project_id": lambda: c.project_id == sa.bindparam("project_id"),
        "assignee_id": lambda: c.assignee_id == sa.bindparam("assignee_id"),
        "due_before": lambda: c.due_date < sa.bindparam("due_before"),
        "due_after": lambda: c.due_date > sa.bindparam("due_after"),
        "q": lambda: c.title.ilike(sa.bindparam("q"), escape="/"),
    }
    statement = _rows_of(TASKS, TASK_FIELDS, include_deleted)
    return statement.where(*(conditions[name]() for name in TASK_FILTER_PARAMS if name in given))


def task_list(
    *, session: Session, tenant_id: int, filters: TaskFilters, query: ListQuery
) -> Page[sa.Row[Any]]:
    """A page of the tenant's tasks, as rows of TASK_FIELDS."""
    sort = parse_sort(query.sort, TASK_SORTS, "created_at")
    fingerprint = filters_fingerprint({**filters.as_dict(), "deleted": query.include_deleted})
    scope = CursorScope(tenant_id, sort.text, fingerprint, "tasks")
    values = {
        "status": list(filters.status) or None,
        "project_id": filters.project_id,
        "assignee_id": filters.assignee_id,
        "due_before": filters.due_before,
        "due_after": filters.due_after,
        "q": contains_pattern(filters.q) if filters.q else None,
    }
    params = {name: value for name, value in values.items() if value is not None}
    shape = (query.include_deleted, *(name in params for name in TASK_FILTER_PARAMS))
    return paginate(
        session,
        Listing(_tasks, shape, {"tenant_id": tenant_id, **params}),
        table=TASKS,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


HISTORY_SORTS: dict[str, SortField] = {}


def _task_history(_shape: None) -> sa.Select[Any]:
    c = TASK_HISTORY.c
    return sa.select(*(c[name] for name in HISTORY_FIELDS)).where(
        c.tenant_id == sa.bindparam("tenant_id"), c.row_id == sa.bindparam("task_id")
    )


def task_history(
    *, session: Session, tenant_id: int, task_id: int, query: ListQuery
) -> Page[sa.Row[Any]]:
    """History of a task, deleted or not, oldest first, as rows of HISTORY_FIELDS."""
    task_get(session=session, tenant_id=tenant_id, task_id=task_id, include_deleted=True)
    sort = parse_sort("id", HISTORY_SORTS, "id")
    scope = CursorScope(
        tenant_id, sort.text, filters_fingerprint({"history_of": task_id}), "task-history"
    )
    return paginate(
        session,
        Listing(_task_history, None, {"tenant_id": tenant_id, "task_id": task_id}),
        table=TASK_HISTORY,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


def _comments(_shape: None) -> sa.Select[Any]:
    return _rows_of(COMMENTS, COMMENT_FIELDS, False).where(
        COMMENTS.c.task_id == sa.bindparam("task_id")
    )


def comment_list(
    *, session: Session, tenant_id: int, task_id: int, query: ListQuery
) -> Page[sa.Row[Any]]:
    """A page of a live task's comments, as rows of COMMENT_FIELDS."""
    task_get(session=session, tenant_id=tenant_id, task_id=task_id)
    sort = parse_sort(query.sort, COMMENT_SORTS, "created_at")
    scope = CursorScope(
        tenant_id, sort.text, filters_fingerprint({"comments_of": task_id}), "task-comments"
    )
    return paginate(
        session,
        Listing(_comments, None, {"tenant_id": tenant_id, "task_id": task_id}),
        table=COMMENTS,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )
