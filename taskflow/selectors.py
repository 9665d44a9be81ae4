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
from sqlalchemy.orm import Session, undefer

from taskflow import due
from taskflow.errors import NotFound
from taskflow.filters import TaskFilters, contains_pattern
from taskflow.models import DUE_AT_SORT, DUE_DATE_SORT, Comment, Project, Task, TaskHistory
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


# The sort key `due_at` orders by the column the `tasks.due` switch names (taskflow.due). Read
# from `due_date` it keeps that column's name in cursors, as the release before the switch
# wrote them; read from `due_at`, it still takes those cursors: until the switch every task is
# due at 00:00 UTC of its `due_date`, so the boundary's day is its time (pagination.SortField).
DUE_AT_BY_DATE = SortField(
    "due_date",
    lambda c: DUE_DATE_SORT,
    sa.Date(),
    lambda r: "infinity" if r.due_at is None else due.day_of(r.due_at),
    newer="due_at",
)
DUE_AT_BY_TIME = SortField(
    "due_at",
    lambda c: DUE_AT_SORT,
    sa.DateTime(timezone=True),
    lambda r: r.due_at or "infinity",
    older="due_date",
    from_older=lambda day: day if day == "infinity" else f"{day}T00:00:00+00:00",
)
TASK_SORTS: dict[str, SortField] = {
    "created_at": _timestamp("created_at"),
    "updated_at": _timestamp("updated_at"),
    "due_at": DUE_AT_BY_TIME,
    "priority": SortField(
        "priority", lambda c: c.priority, sa.SmallInteger(), lambda r: r.priority
    ),
    "title": SortField("title", lambda c: c.title, sa.String(), lambda r: r.title),
}
TASK_SORTS_BY_DATE = {**TASK_SORTS, "due_at": DUE_AT_BY_DATE}


def task_sorts(column: due.Column) -> dict[str, SortField]:
    """The task list's sort keys as a process reading `column` orders them."""
    return TASK_SORTS if column == due.DUE_AT else TASK_SORTS_BY_DATE


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
    """A task, with the due column this process reads (taskflow.due) loaded and the other not."""
    statement = _live(Task, tenant_id, include_deleted).where(Task.id == task_id)
    column = Task.due_at if due.served() == due.DUE_AT else Task.due_date
    task: Task | None = session.scalars(statement.options(undefer(column))).first()
    if task is None:
        raise NotFound(f"No task {task_id}.")
    return task


def _rows_of(
    table: sa.Table,
    fields: tuple[str, ...],
    include_deleted: bool,
    computed: dict[str, sa.ColumnElement[Any]] | None = None,
) -> sa.Select[Any]:
    """The tenant's rows of `table` (parameter `tenant_id`) as `fields` columns: Core, no ORM.
    A field in `computed` is that expression instead of the column of its name."""
    computed = computed or {}
    statement = sa.select(
        *(computed[name].label(name) if name in computed else table.c[name] for name in fields)
    ).where(table.c.tenant_id == sa.bindparam("tenant_id"))
    return statement if include_deleted else statement.where(table.c.deleted_at.is_(None))


def due_at_of(column: due.Column, table: sa.Table = TASKS) -> sa.ColumnElement[Any]:
    """A task's `due_at` read from `column`: from `due_date`, 00:00 UTC of that day."""
    if column == due.DUE_AT:
        return table.c.due_at
    return sa.func.timezone(
        "UTC", sa.cast(table.c.due_date, sa.DateTime()), type_=sa.DateTime(timezone=True)
    )


def _projects(include_deleted: bool) -> sa.Select[Any]:
    return _rows_of(PROJECTS, PROJECT_FIELDS, include_deleted)


def project_list(
    *, session: Session | sa.Connection, tenant_id: int, query: ListQuery
) -> Page[Any]:
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


def _tasks(shape: tuple[Any, ...]) -> sa.Select[Any]:
    """Tasks with the filters `shape` names, each a parameter named as in TASK_FILTER_PARAMS,
    their due time read from the column `shape` names first."""
    column, include_deleted, *present = shape
    given = {name for name, there in zip(TASK_FILTER_PARAMS, present, strict=True) if there}
    c = TASKS.c
    due_column = c[column]
    conditions = {
        # One array parameter, not an expanding IN: the statement's text is the same for any
        # number of statuses, so it goes to the driver with the binding (tenants.driver_reads).
        "status": lambda: c.status == sa.any_(sa.bindparam("status")),
        "project_id": lambda: c.project_id == sa.bindparam("project_id"),
        "assignee_id": lambda: c.assignee_id == sa.bindparam("assignee_id"),
        "due_before": lambda: due_column < sa.bindparam("due_before"),
        "due_after": lambda: due_column > sa.bindparam("due_after"),
        "q": lambda: c.title.ilike(sa.bindparam("q"), escape="/"),
    }
    statement = _rows_of(TASKS, TASK_FIELDS, include_deleted, {"due_at": due_at_of(column)})
    return statement.where(*(conditions[name]() for name in TASK_FILTER_PARAMS if name in given))


def task_list(
    *, session: Session | sa.Connection, tenant_id: int, filters: TaskFilters, query: ListQuery
) -> Page[Any]:
    """A page of the tenant's tasks, as rows of TASK_FIELDS, due times read from the column the
    `tasks.due` switch names (taskflow.due)."""
    column = due.served()
    sort = parse_sort(query.sort, task_sorts(column), "created_at")
    fingerprint = filters_fingerprint({**filters.as_dict(), "deleted": query.include_deleted})
    scope = CursorScope(tenant_id, sort.text, fingerprint, "tasks")
    due_before, due_after = filters.due_bounds(column)
    values = {
        "status": list(filters.status) or None,
        "project_id": filters.project_id,
        "assignee_id": filters.assignee_id,
        "due_before": due_before,
        "due_after": due_after,
        "q": contains_pattern(filters.q) if filters.q else None,
    }
    params = {name: value for name, value in values.items() if value is not None}
    shape = (column, query.include_deleted, *(name in params for name in TASK_FILTER_PARAMS))
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


def task_history(*, session: Session, tenant_id: int, task_id: int, query: ListQuery) -> Page[Any]:
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


def comment_list(*, session: Session, tenant_id: int, task_id: int, query: ListQuery) -> Page[Any]:
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
