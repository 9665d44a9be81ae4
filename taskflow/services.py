"""Services: everything TaskFlow writes. Keyword-only, typed, no HTTP; the caller commits.

Writes carry the version the client last saw. A mismatch is a Conflict (409) when the version
came in the body and PreconditionFailed (412) when it came as If-Match, whichever way it is
found: by the check before writing, or at flush by the version column (StaleDataError) when a
concurrent write committed in between. Either way the error carries the current row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from taskflow import due
from taskflow.errors import (
    Conflict,
    InvalidInput,
    PreconditionFailed,
    PreconditionRequired,
    Unprocessable,
)
from taskflow.models import WRITABLE, Comment, Project, Task, columns_with
from taskflow.representations import represent
from taskflow.selectors import project_get, task_get
from tenants.binding import hold_write_lock

# What a PATCH may change: the columns the model declares WRITABLE.
PROJECT_WRITABLE = frozenset(columns_with(Project, WRITABLE))
TASK_WRITABLE = frozenset(columns_with(Task, WRITABLE))


@dataclass(frozen=True)
class Precondition:
    """The version a write expects: from If-Match (412 on mismatch) or the body (409)."""

    if_match: int | None = None
    body_version: int | None = None
    if_match_any: bool = False

    def check(self, row: Any, *, required: bool = True) -> None:
        """Raise unless `row` is at the expected version; with nothing expected, 428 if required."""
        if self.if_match_any:
            return
        if self.if_match is not None:
            if row.version != self.if_match:
                raise PreconditionFailed(
                    f"If-Match {self.if_match} no longer matches version {row.version}.",
                    current=represent(row),
                )
            return
        if self.body_version is not None:
            if row.version != self.body_version:
                raise Conflict(
                    f"Version {self.body_version} is stale; the current version is {row.version}.",
                    current=represent(row),
                )
            return
        if not required:
            return
        raise PreconditionRequired(
            "Send If-Match (or the version you last read) to change this resource."
        )


NO_VERSION = Precondition()


def _flush(session: Session, row: Any, what: str, precondition: Precondition = NO_VERSION) -> None:
    """Flush, turning a lost race on the version column and unique keys into 409s.

    A race lost at flush is the same failure as a version mismatch found before writing, only
    found later: when the client's expectation came as If-Match it is a 412, like the check's,
    otherwise a 409. After StaleDataError the transaction is rolled back (the write has lost
    anyway) and the current row is read in a fresh one, so the problem carries what won.
    """
    entity, key = type(row), {"tenant_id": row.tenant_id, "id": row.id}
    try:
        session.flush()
    except StaleDataError as exc:
        session.rollback()
        current = session.get(entity, key)
        lost = PreconditionFailed if precondition.if_match is not None else Conflict
        raise lost(
            f"The {what} was changed by another request.",
            current=represent(current) if current else None,
        ) from exc
    except IntegrityError as exc:
        raise Conflict(_integrity_message(exc, what)) from exc


def _integrity_message(exc: IntegrityError, what: str) -> str:
    text = str(exc.orig)
    if "projects_key_live" in text:
        return "A live project already has this key."
    if "tasks_external_id_key" in text:
        return "A task with this external_id already exists."
    return f"The {what} conflicts with existing data."


def _apply(row: Any, changes: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "This field cannot be changed.")
    for name, value in changes.items():
        setattr(row, name, value)


# --- Projects -----------------------------------------------------------------------------------


def project_create(*, session: Session, tenant_id: int, data: dict[str, Any]) -> Project:
    project = Project(tenant_id=tenant_id, **data)
    session.add(project)
    _flush(session, project, "project")
    return project


def project_update(
    *,
    session: Session,
    tenant_id: int,
    project_id: int,
    precondition: Precondition,
    changes: dict[str, Any],
) -> Project:
    project = project_get(session=session, tenant_id=tenant_id, project_id=project_id)
    precondition.check(project)
    _apply(project, changes, PROJECT_WRITABLE)
    _flush(session, project, "project", precondition)
    return project


def project_delete(
    *,
    session: Session,
    tenant_id: int,
    project_id: int,
    precondition: Precondition,
) -> Project:
    """Soft-delete the project and its live tasks, stamping both with the same deleted_at."""
    project = project_get(session=session, tenant_id=tenant_id, project_id=project_id)
    precondition.check(project)
    now = session.scalar(sa.select(sa.func.now()))
    project.deleted_at = now
    _flush(session, project, "project", precondition)
    session.execute(
        sa.update(Task)
        .where(
            Task.tenant_id == tenant_id, Task.project_id == project_id, Task.deleted_at.is_(None)
        )
        .values(deleted_at=now, version=Task.version + 1, updated_at=sa.func.now()),
        execution_options={"synchronize_session": False},
    )
    return project


def project_restore(
    *, session: Session, tenant_id: int, project_id: int, precondition: Precondition = NO_VERSION
) -> Project:
    """Restore the project and exactly the tasks its deletion took with it.

    A version sent is checked like a delete's (412 for If-Match, 409 for the body's), but none is
    required: restoring only undoes a delete, and restoring a live row changes nothing.
    """
    project = project_get(
        session=session, tenant_id=tenant_id, project_id=project_id, include_deleted=True
    )
    precondition.check(project, required=False)
    if project.deleted_at is None:
        return project
    deleted_at: datetime = project.deleted_at
    project.deleted_at = None
    _flush(session, project, "project", precondition)
    session.execute(
        sa.update(Task)
        .where(
            Task.tenant_id == tenant_id,
            Task.project_id == project_id,
            Task.deleted_at == deleted_at,
        )
        .values(deleted_at=None, version=Task.version + 1, updated_at=sa.func.now()),
        execution_options={"synchronize_session": False},
    )
    return project


# --- Tasks --------------------------------------------------------------------------------------


def _require_live_project(session: Session, tenant_id: int, project_id: int) -> None:
    exists = session.scalar(
        sa.select(Project.id).where(
            Project.tenant_id == tenant_id, Project.id == project_id, Project.deleted_at.is_(None)
        )
    )
    if exists is None:
        raise Unprocessable("project_id", f"No live project {project_id}.")


def _due_columns(task: Task | None, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with `due_at` (a time, a date or None) written to the column this process
    reads (taskflow.due); the expand's trigger sets the other while both exist.

    A date is 00:00 UTC of that day, except that a task already due on that day keeps its time
    (an old client's PATCH of the day it was shown). Read from `due_date`, a time is its UTC day.
    """
    if "due_at" not in changes:
        return changes
    changes = dict(changes)
    value: datetime | date | None = changes.pop("due_at")
    if due.served() == due.DUE_DATE:
        changes["due_date"] = due.day_of(value) if isinstance(value, datetime) else value
        return changes
    if isinstance(value, datetime) or value is None:
        changes["due_at"] = value
    elif task is None or task.due_at is None or due.day_of(task.due_at) != value:
        changes["due_at"] = due.start_of(value)
    return changes


def task_create(*, session: Session, tenant_id: int, data: dict[str, Any]) -> Task:
    _require_live_project(session, tenant_id, data["project_id"])
    task = Task(tenant_id=tenant_id, **_due_columns(None, data))
    session.add(task)
    _flush(session, task, "task")
    return task


def task_update(
    *,
    session: Session,
    tenant_id: int,
    task_id: int,
    precondition: Precondition,
    changes: dict[str, Any],
) -> Task:
    task = task_get(session=session, tenant_id=tenant_id, task_id=task_id)
    precondition.check(task)
    if "project_id" in changes and changes["project_id"] != task.project_id:
        _require_live_project(session, tenant_id, changes["project_id"])
    _apply(task, _due_columns(task, changes), TASK_WRITABLE | {"due_date"})
    _flush(session, task, "task", precondition)
    return task


def task_delete(
    *,
    session: Session,
    tenant_id: int,
    task_id: int,
    precondition: Precondition,
) -> Task:
    task = task_get(session=session, tenant_id=tenant_id, task_id=task_id)
    precondition.check(task)
    task.deleted_at = session.scalar(sa.select(sa.func.now()))
    _flush(session, task, "task", precondition)
    return task


def task_restore(
    *, session: Session, tenant_id: int, task_id: int, precondition: Precondition = NO_VERSION
) -> Task:
    """Restore the task; a version sent is checked, none is required (as project_restore)."""
    task = task_get(session=session, tenant_id=tenant_id, task_id=task_id, include_deleted=True)
    precondition.check(task, required=False)
    if task.deleted_at is not None:
        project = project_get(
            session=session, tenant_id=tenant_id, project_id=task.project_id, include_deleted=True
        )
        if project.deleted_at is not None:
            raise Conflict("The task's project is deleted; restore the project first.")
        task.deleted_at = None
        _flush(session, task, "task", precondition)
    return task


# --- Comments -----------------------------------------------------------------------------------


def comment_create(
    *,
    session: Session,
    tenant_id: int,
    task_id: int,
    author_id: int,
    body: str,
) -> Comment:
    task_get(session=session, tenant_id=tenant_id, task_id=task_id)
    comment = Comment(tenant_id=tenant_id, task_id=task_id, author_id=author_id, body=body)
    session.add(comment)
    _flush(session, comment, "comment")
    return comment


# --- Upkeep -------------------------------------------------------------------------------------


def purge_deleted(*, session: Session, tenant_id: int, older_than: datetime) -> dict[str, int]:
    """Hard-delete rows soft-deleted before `older_than` (history triggers record each one)."""
    hold_write_lock(session)
    counts: dict[str, int] = {}
    for entity in (Comment, Task, Project):
        result = session.execute(
            sa.delete(entity).where(
                entity.tenant_id == tenant_id,
                entity.deleted_at.is_not(None),
                entity.deleted_at < older_than,
            ),
            execution_options={"synchronize_session": False},
        )
        counts[entity.__tablename__] = result.rowcount  # type: ignore[attr-defined]
    return counts
