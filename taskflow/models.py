"""TaskFlow's tables, defined once under the placeholder schema `tenant`.

At run time a connection's schema_translate_map points `tenant` at the tenant's own schema
(schema mode) or at `shared` (rls mode); nothing here knows which. Every table carries
tenant_id, so both placements are one code path and history records the tenant.

Each column also says, in its `info`, what it is to the API and to history (SHOWN, WRITABLE,
AUDITED): the representations, the PATCHable fields, the API's input rules, the list selectors'
columns and the check of the history triggers' argument lists all read that one declaration
(`columns_with`); the import's file columns take their limits and defaults from it. A
column's default is declared once too (`defaulted`): sent by the ORM, written by SQL (the
import's upsert), and the database's own DEFAULT.
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
    case,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from tenants.placement import PLACEHOLDER_SCHEMA

PRIORITY_MIN, PRIORITY_MAX = 0, 4
MAX_ID = 2**63 - 1  # ids are bigint
LIVE = text("deleted_at IS NULL")
# Each tenant draws ids from its own sequence (migration 0006 of migrations_sqla): ids are unique
# per tenant, keyed (tenant_id, id), and say nothing of other tenants' writes.
NEXT_ID = text("public.taskflow_next_id()")


class TaskStatus(enum.StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    metadata = MetaData(schema=PLACEHOLDER_SCHEMA)


# What a column is to the API and to history, as flags in its `info`.
SHOWN = "shown"  # a field of the representation, in the table's column order
WRITABLE = "writable"  # a PATCH may change it
AUDITED = "audited"  # history records it: an argument of the table's history triggers
FIELD = {SHOWN: True, WRITABLE: True, AUDITED: True}  # what a client writes
RECORDED = {SHOWN: True, AUDITED: True}  # shown and recorded, but set once (at creation)
READ_ONLY = {SHOWN: True}  # the platform sets it
# Bounds of what a client may write beyond the column's type ("min", "max", "choices"), read by
# taskflow.serializers.
REFERENCE = {"min": 1, "max": MAX_ID}  # the id of another row: a bigint


# Columns an evolution under way has added to a table and to its history triggers before the
# application maps them (control_plane.evolution). Empty now: the `tasks_due_at` evolution's
# `due_at` is mapped (taskflow.due says which of it and `due_date` a process reads).
EVOLVING_AUDITED: dict[str, tuple[str, ...]] = {}


def columns_with(entity: Any, flag: str) -> tuple[str, ...]:
    """The names of the entity's columns that carry `flag` in their info, in table order."""
    return tuple(c.name for c in entity.__table__.columns if c.info.get(flag))


def defaulted(value: str | int) -> dict[str, Any]:
    """mapped_column arguments for one default: the ORM sends it (so a new row is complete
    without reading it back) and the database has it as its DEFAULT."""
    return {"default": value, "server_default": str(value)}


def length_of(entity: Any, name: str) -> int:
    """The declared length of a string column."""
    length = entity.__table__.c[name].type.length
    assert isinstance(length, int)
    return length


def default_of(entity: Any, name: str) -> Any:
    """A column's default value, as `defaulted` declared it (None: it has none)."""
    default = entity.__table__.c[name].default
    return None if default is None else default.arg


class TimestampedVersioned:
    """Columns every audited table has: tenant, timestamps, soft delete, optimistic lock."""

    # sort_order: id leads and these follow a table's own columns, as the representation has them.
    # The key is (tenant_id, id) (each table's PrimaryKeyConstraint): ids are unique per tenant.
    id: Mapped[int] = mapped_column(
        BigInteger, server_default=NEXT_ID, nullable=False, sort_order=-1, info=READ_ONLY
    )
    tenant_id: Mapped[int] = mapped_column(BigInteger, nullable=False, sort_order=1)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        sort_order=1,
        info=READ_ONLY,
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
        sort_order=1,
        info=READ_ONLY,
    )
    deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), sort_order=1, info=RECORDED
    )
    version: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default="1", sort_order=1, info=READ_ONLY
    )


class Project(TimestampedVersioned, Base):
    __tablename__ = "projects"

    key: Mapped[str] = mapped_column(String(20), nullable=False, info=FIELD)
    name: Mapped[str] = mapped_column(String(200), nullable=False, info=FIELD)
    description: Mapped[str] = mapped_column(Text, nullable=False, **defaulted(""), info=FIELD)

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="projects_pkey"),
        Index("projects_key_live", "tenant_id", "key", unique=True, postgresql_where=LIVE),
        Index("projects_created_live", "tenant_id", "created_at", "id", postgresql_where=LIVE),
    )


# Sortable task keys and the column expression each sorts by: nullable keys sort by an expression
# that gives NULL a place ("infinity") in the order an index also has. A CASE, not coalesce():
# under row-level security PostgreSQL only puts a condition it deems leakproof into an index scan
# ahead of the policy, and a coalesce is not one, so a keyset page after a cursor would filter
# every earlier row of the tenant instead of starting the index range there (migration 0008).
def _infinite_when_null(column: str, infinity: str) -> ColumnElement[Any]:
    return case(
        (literal_column(column).is_(None), literal_column(infinity)),
        else_=literal_column(column),
    )


DUE_DATE_SORT: ColumnElement[date] = _infinite_when_null("due_date", "'infinity'::date")
DUE_AT_SORT: ColumnElement[datetime] = _infinite_when_null("due_at", "'infinity'::timestamptz")


class Task(TimestampedVersioned, Base):
    __tablename__ = "tasks"

    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False, info=FIELD | REFERENCE)
    external_id: Mapped[str | None] = mapped_column(String(100), info=FIELD)
    title: Mapped[str] = mapped_column(String(500), nullable=False, info=FIELD)
    description: Mapped[str] = mapped_column(Text, nullable=False, **defaulted(""), info=FIELD)
    status: Mapped[str] = mapped_column(
        String(20),
        nullable=False,
        **defaulted(TaskStatus.TODO.value),
        info=FIELD | {"choices": tuple(s.value for s in TaskStatus)},
    )
    priority: Mapped[int] = mapped_column(
        SmallInteger,
        nullable=False,
        **defaulted(2),
        info=FIELD | {"min": PRIORITY_MIN, "max": PRIORITY_MAX},
    )
    assignee_id: Mapped[int | None] = mapped_column(BigInteger, info=FIELD | REFERENCE)
    # The `tasks_due_at` evolution (taskflow.due): both columns exist from its expand until its
    # contract drops `due_date`; a process reads and writes only the one the `tasks.due` switch
    # names, so neither is loaded unless asked for (taskflow.selectors.task_get). The API shows
    # and takes `due_at`; history records both while both exist.
    # `evaluates_none`: an INSERT names only the one set, never the other as an implicit NULL.
    due_date: Mapped[date | None] = mapped_column(
        Date().evaluates_none(), deferred=True, info={AUDITED: True}
    )
    due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True).evaluates_none(), deferred=True, info=FIELD
    )

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="tasks_pkey"),
        UniqueConstraint("tenant_id", "external_id", name="tasks_external_id_key"),
        # Children reference the key (tenant_id, id): a row can never point into another tenant.
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["projects.tenant_id", "projects.id"],
            ondelete="CASCADE",
            name="tasks_project_fkey",
        ),
        CheckConstraint(
            f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="tasks_priority_range"
        ),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s.value}'" for s in TaskStatus) + ")",
            name="tasks_status_valid",
        ),
        Index("tasks_created_live", "tenant_id", "created_at", "id", postgresql_where=LIVE),
        Index("tasks_updated_live", "tenant_id", "updated_at", "id", postgresql_where=LIVE),
        Index("tasks_due_sort_live", "tenant_id", DUE_DATE_SORT, "id", postgresql_where=LIVE),
        Index("tasks_due_at_sort_live", "tenant_id", DUE_AT_SORT, "id", postgresql_where=LIVE),
        Index("tasks_priority_live", "tenant_id", "priority", "id", postgresql_where=LIVE),
        # The mixed-direction sort -priority,due_date (and its reverse): migrations 0002, 0008.
        Index(
            "tasks_priority_due_sort_live",
            "tenant_id",
            literal_column("priority").desc(),
            DUE_DATE_SORT,
            "id",
            postgresql_where=LIVE,
        ),
        Index(
            "tasks_priority_due_at_sort_live",
            "tenant_id",
            literal_column("priority").desc(),
            DUE_AT_SORT,
            "id",
            postgresql_where=LIVE,
        ),
        Index("tasks_title_live", "tenant_id", "title", "id", postgresql_where=LIVE),
        Index("tasks_project_live", "tenant_id", "project_id", "id", postgresql_where=LIVE),
        Index("tasks_assignee_live", "tenant_id", "assignee_id", "id", postgresql_where=LIVE),
    )


class Comment(TimestampedVersioned, Base):
    __tablename__ = "comments"

    task_id: Mapped[int] = mapped_column(BigInteger, nullable=False, info=RECORDED)
    author_id: Mapped[int] = mapped_column(BigInteger, nullable=False, info=RECORDED)
    body: Mapped[str] = mapped_column(Text, nullable=False, info=RECORDED)
    # Recorded by history, but a comment's representation does not show it.
    deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), sort_order=1, info={AUDITED: True}
    )

    __mapper_args__: Any = {"version_id_col": TimestampedVersioned.version}
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="comments_pkey"),
        ForeignKeyConstraint(
            ["tenant_id", "task_id"],
            ["tasks.tenant_id", "tasks.id"],
            ondelete="CASCADE",
            name="comments_task_fkey",
        ),
        Index("comments_task_live", "tenant_id", "task_id", "id", postgresql_where=LIVE),
    )


class HistoryColumns:
    """A history row: written only by triggers, read by the history endpoints.

    `changes` is stored as `changes_format` says (migration 0003): 1 is the documented
    {"col": [old, new]}; 2 is an insert's new values, flat {"col": new}. Read it through
    taskflow.representations.history_changes, never raw. The primary key is (tenant_id, row_id,
    id), the order history is read in; ids are unique per tenant (the tenant's own sequence).
    """

    id: Mapped[int] = mapped_column(BigInteger, server_default=NEXT_ID, info=READ_ONLY)
    tenant_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    row_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    operation: Mapped[str] = mapped_column(String(12), nullable=False, info=READ_ONLY)
    version: Mapped[int | None] = mapped_column(Integer, info=READ_ONLY)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, info=READ_ONLY)
    changes_format: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, server_default="1", info=READ_ONLY
    )
    actor_id: Mapped[int | None] = mapped_column(BigInteger, info=READ_ONLY)
    request_id: Mapped[str | None] = mapped_column(String(64), info=READ_ONLY)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), info=READ_ONLY
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
