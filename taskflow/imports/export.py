"""Export of a tenant's live tasks as CSV in the import's own columns, with COPY ... TO STDOUT.

The task list's filters (taskflow.filters) select the same tasks here. A file exported here
imports back unchanged: each row carries the task's id (and external id), so the import updates
that task instead of adding one, and skips it when nothing changed; projects go by key,
assignees by email. Streams in chunks: the caller hands them to the HTTP response as they come,
so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from psycopg import sql
from sqlalchemy.orm import Session

from taskflow import due
from taskflow.filters import TaskFilters, contains_pattern
from taskflow.imports.columns import DUE_FILE_COLUMNS, FILE_COLUMNS
from taskflow.imports.staging import create_member_table, driver_connection, load_members

CHUNK_BYTES = 256 * 1024

# A due time as RFC 3339 in UTC ("Z"), its fraction only when it has one.
_RFC3339 = (
    "rtrim(rtrim(to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.')"
    " || 'Z'"
)
# The due column a file has (the one the client's API version names) read from the tasks column
# the process reads (taskflow.due).
DUE_EXPORTED: dict[tuple[str, str], str] = {
    ("due_at", due.DUE_AT): _RFC3339.format(value="t.due_at"),
    ("due_at", due.DUE_DATE): _RFC3339.format(value="(t.due_date::timestamp AT TIME ZONE 'UTC')"),
    ("due_date", due.DUE_AT): "(t.due_at AT TIME ZONE 'UTC')::date",
    ("due_date", due.DUE_DATE): "t.due_date",
}


def exported(file_due: str, served: due.Column) -> str:
    """The file's columns, in its order, named as its header names them: one due column."""
    return ", ".join(
        f"{DUE_EXPORTED[(file_due, served)] if c.name == file_due else c.sql(c.exported)}"
        f" AS {c.name}"
        for c in FILE_COLUMNS
        if c.name not in DUE_FILE_COLUMNS or c.name == file_due
    )


EXPORT = """
COPY (
  SELECT {exported}
  FROM {schema}.tasks t
  JOIN {schema}.projects p ON p.id = t.project_id
  LEFT JOIN (
    SELECT DISTINCT ON (user_id) user_id, email FROM import_members_raw ORDER BY user_id, email
  ) m ON m.user_id = t.assignee_id
  WHERE t.tenant_id = %(tenant)s AND t.deleted_at IS NULL{filters}
  ORDER BY t.id
) TO STDOUT (FORMAT csv, HEADER true)
"""


# Each filter's condition, as taskflow.selectors' task list has it; values are parameters.
CONDITIONS = {
    "status": "t.status = ANY(%(status)s)",
    "project_id": "t.project_id = %(project_id)s",
    "assignee_id": "t.assignee_id = %(assignee_id)s",
    "due_before": "t.{due} < %(due_before)s",
    "due_after": "t.{due} > %(due_after)s",
    "q": "t.title ILIKE %(q)s ESCAPE '/'",
}


def _filtered(filters: TaskFilters, served: due.Column) -> dict[str, object]:
    """The filters given, as the statement's parameters."""
    due_before, due_after = filters.due_bounds(served)
    values: dict[str, object] = {
        "status": list(filters.status) or None,
        "project_id": filters.project_id,
        "assignee_id": filters.assignee_id,
        "due_before": due_before,
        "due_after": due_after,
        "q": contains_pattern(filters.q) if filters.q else None,
    }
    return {name: value for name, value in values.items() if value is not None}


def export_tasks(
    *,
    session: Session,
    schema: str,
    tenant_id: int,
    members: Iterable[tuple[str, int]],
    filters: TaskFilters = TaskFilters(),  # noqa: B008 - frozen, so one instance is safe to share
    due_column: str = "due_at",
) -> Iterator[bytes]:
    """The tenant's live tasks that pass `filters`, as CSV, in chunks of about CHUNK_BYTES.

    `due_column` is the file's due column: `due_date` for a client of an API version before
    2026-12-06 (taskflow.api_versions), else `due_at`."""
    served = due.served()
    pg = driver_connection(session)
    create_member_table(pg)
    load_members(pg, members)
    params = _filtered(filters, served)
    where = "".join(f"\n    AND {CONDITIONS[name].format(due=served)}" for name in params)
    statement = sql.SQL(EXPORT).format(
        schema=sql.Identifier(schema),
        exported=sql.SQL(exported(due_column, served)),
        filters=sql.SQL(where),
    )
    buffer = bytearray()
    with pg.cursor() as cursor, cursor.copy(statement, {"tenant": tenant_id, **params}) as copy:
        for row in copy:
            buffer += row
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)
