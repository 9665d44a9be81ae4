"""Selectors: everything TaskFlow reads. Each takes a bound session and returns rows or pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from taskflow.errors import NotFound
from taskflow.models import DUE_DATE_SORT, Comment, Project, Task, TaskHistory
from taskflow.pagination import (
    CursorScope,
    Page,
    SortField,
    filters_fingerprint,
    paginate,
    parse_sort,
)


def _timestamp(name: str) -> SortField:
    return SortField(
        name, lambda e: getattr(e, name), sa.DateTime(timezone=True), lambda r: getattr(r, name)
    )


TASK_SORTS: dict[str, SortField] = {
    "created_at": _timestamp("created_at"),
    "updated_at": _timestamp("updated_at"),
    "due_date": SortField(
        "due_date", lambda e: DUE_DATE_SORT, sa.Date(), lambda r: r.due_date or "infinity"
    ),
    "priority": SortField(
        "priority", lambda e: e.priority, sa.SmallInteger(), lambda r: r.priority
    ),
    "title": SortField("title", lambda e: e.title, sa.String(), lambda r: r.title),
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


def project_list(*, session: Session, tenant_id: int, query: ListQuery) -> Page[Project]:
    sort = parse_sort(query.sort, PROJECT_SORTS, "created_at")
    scope = CursorScope(
        tenant_id, sort.text, filters_fingerprint({"deleted": query.include_deleted})
    )
    statement = _live(Project, tenant_id, query.include_deleted)
    return paginate(
        session,
        statement,
        entity=Project,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


def task_list(
    *, session: Session, tenant_id: int, filters: TaskFilters, query: ListQuery
) -> Page[Task]:
    sort = parse_sort(query.sort, TASK_SORTS, "created_at")
    fingerprint = filters_fingerprint({**filters.as_dict(), "deleted": query.include_deleted})
    scope = CursorScope(tenant_id, sort.text, fingerprint)
    statement = _live(Task, tenant_id, query.include_deleted)
    if filters.status:
        statement = statement.where(Task.status.in_(filters.status))
    if filters.project_id is not None:
        statement = statement.where(Task.project_id == filters.project_id)
    if filters.assignee_id is not None:
        statement = statement.where(Task.assignee_id == filters.assignee_id)
    if filters.due_before is not None:
        statement = statement.where(Task.due_date < filters.due_before)
    if filters.due_after is not None:
        statement = statement.where(Task.due_date > filters.due_after)
    if filters.q:
        statement = statement.where(Task.title.icontains(filters.q, autoescape=True))
    return paginate(
        session,
        statement,
        entity=Task,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


HISTORY_SORTS: dict[str, SortField] = {}


def task_history(
    *, session: Session, tenant_id: int, task_id: int, query: ListQuery
) -> Page[TaskHistory]:
    """History of a task, deleted or not, oldest first."""
    task_get(session=session, tenant_id=tenant_id, task_id=task_id, include_deleted=True)
    sort = parse_sort("id", HISTORY_SORTS, "id")
    scope = CursorScope(tenant_id, sort.text, filters_fingerprint({"history_of": task_id}))
    statement = sa.select(TaskHistory).where(
        TaskHistory.tenant_id == tenant_id, TaskHistory.row_id == task_id
    )
    return paginate(
        session,
        statement,
        entity=TaskHistory,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )


def comment_list(
    *, session: Session, tenant_id: int, task_id: int, query: ListQuery
) -> Page[Comment]:
    task_get(session=session, tenant_id=tenant_id, task_id=task_id)
    sort = parse_sort(query.sort, COMMENT_SORTS, "created_at")
    scope = CursorScope(tenant_id, sort.text, filters_fingerprint({"comments_of": task_id}))
    statement = _live(Comment, tenant_id, False).where(Comment.task_id == task_id)
    return paginate(
        session,
        statement,
        entity=Comment,
        sort=sort,
        scope=scope,
        cursor_token=query.cursor,
        limit=query.limit,
    )
