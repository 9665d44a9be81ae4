"""TaskFlow's tables, defined once under the placeholder schema `tenant`.

At run time a connection's schema_translate_map points `tenant` at the tenant's own schema
(schema mode) or at `shared` (rls mode); nothing here knows which. Every table carries
tenant_id, so both placements are one code path and history records the tenant.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from tenants.placement import PLACEHOLDER_SCHEMA

LIVE = text("deleted_at IS NULL")
# Every table in every placement draws ids from one sequence, so ids are unique platform-wide.
NEXT_ID = text("nextval('public.taskflow_id_seq')")


class TaskStatus(enum.StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    metadata = MetaData(schema=PLACEHOLDER_SCHEMA)


class TimestampedVersioned:
    """Columns every audited table has: tenant, timestamps, soft delete, optimistic lock."""

    id: Mapped[int] = mapped_column(BigInteger, server_default=NEXT_ID, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")


class Project(TimestampedVersioned, Base):
    __tablename__ = "projects"

    key: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        Index("projects_key_live", "tenant_id", "key", unique=True, postgresql_where=LIVE),
        UniqueConstraint("tenant_id", "id", name="projects_tenant_id_key"),
        Index("projects_created_live", "tenant_id", "created_at", "id", postgresql_where=LIVE),
    )


# Sortable task keys and the column expression each sorts by: nullable keys sort by a coalesced
# expression so NULLs have a place in the order that an index also has.
DUE_DATE_SORT: ColumnElement[date] = func.coalesce(
    literal_column("due_date"), literal_column("'infinity'::date")
)


class Task(TimestampedVersioned, Base):
    __tablename__ = "tasks"

    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default=TaskStatus.TODO.value
    )
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="2")
    assignee_id: Mapped[int | None] = mapped_column(BigInteger)
    due_date: Mapped[date | None] = mapped_column(Date)

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="tasks_external_id_key"),
        UniqueConstraint("tenant_id", "id", name="tasks_tenant_id_key"),
        # Children reference (tenant_id, id): a row can never point into another tenant.
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["projects.tenant_id", "projects.id"],
            ondelete="CASCADE",
            name="tasks_project_fkey",
        ),
        CheckConstraint("priority BETWEEN 0 AND 4", name="tasks_priority_range"),
        CheckConstraint(
            "status IN ('todo', 'in_progress', 'done', 'cancelled')", name="tasks_status_valid"
        ),
        Index("tasks_created_live", "tenant_id", "created_at", "id", postgresql_where=LIVE),
        Index("tasks_updated_live", "tenant_id", "updated_at", "id", postgresql_where=LIVE),
        Index("tasks_due_live", "tenant_id", DUE_DATE_SORT, "id", postgresql_where=LIVE),
        Index("tasks_priority_live", "tenant_id", "priority", "id", postgresql_where=LIVE),
        # The mixed-direction sort -priority,due_date (and its reverse): migration 0002.
        Index(
            "tasks_priority_due_live",
            "tenant_id",
            literal_column("priority").desc(),
            DUE_DATE_SORT,
            "id",
            postgresql_where=LIVE,
        ),
        Index("tasks_title_live", "tenant_id", "title", "id", postgresql_where=LIVE),
        Index("tasks_project_live", "tenant_id", "project_id", "id", postgresql_where=LIVE),
        Index("tasks_assignee_live", "tenant_id", "assignee_id", "id", postgresql_where=LIVE),
    )


class Comment(TimestampedVersioned, Base):
    __tablename__ = "comments"

    task_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    author_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        Index("comments_task_live", "tenant_id", "task_id", "id", postgresql_where=LIVE),
    )


class HistoryColumns:
    """A history row: written only by triggers, read by the history endpoints.

    `changes` is stored as `changes_format` says (migration 0003): 1 is the documented
    {"col": [old, new]}; 2 is an insert's new values, flat {"col": new}. Read it through
    taskflow.representations.history_changes, never raw. The primary key is (tenant_id, row_id,
    id), the order history is read in; ids alone are unique too (one platform-wide sequence).
    """

    id: Mapped[int] = mapped_column(BigInteger, server_default=NEXT_ID)
    tenant_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    row_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    operation: Mapped[str] = mapped_column(String(12), nullable=False)
    version: Mapped[int | None] = mapped_column(Integer)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    changes_format: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ProjectHistory(HistoryColumns, Base):
    __tablename__ = "projects_history"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "row_id", "id"),)


class TaskHistory(HistoryColumns, Base):
    __tablename__ = "tasks_history"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "row_id", "id"),)


class CommentHistory(HistoryColumns, Base):
    __tablename__ = "comments_history"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "row_id", "id"),)
