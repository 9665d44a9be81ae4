"""Export of a tenant's live tasks as CSV in the import's own columns, with COPY ... TO STDOUT.

A file exported here imports back unchanged (projects by key, assignees by email). Streams in
chunks: the caller hands them to the HTTP response as they come, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from psycopg import sql
from sqlalchemy.orm import Session

from taskflow.imports.columns import FILE_COLUMNS
from taskflow.imports.staging import create_member_table, driver_connection, load_members

CHUNK_BYTES = 256 * 1024

# The file's columns, in its order, named as its header names them.
EXPORTED = ", ".join(f"{c.sql(c.exported)} AS {c.name}" for c in FILE_COLUMNS)

EXPORT = """
COPY (
  SELECT {exported}
  FROM {schema}.tasks t
  JOIN {schema}.projects p ON p.id = t.project_id
  LEFT JOIN (
    SELECT DISTINCT ON (user_id) user_id, email FROM import_members_raw ORDER BY user_id, email
  ) m ON m.user_id = t.assignee_id
  WHERE t.tenant_id = %(tenant)s AND t.deleted_at IS NULL
  ORDER BY t.id
) TO STDOUT (FORMAT csv, HEADER true)
"""


def export_tasks(
    *, session: Session, schema: str, tenant_id: int, members: Iterable[tuple[str, int]]
) -> Iterator[bytes]:
    """The tenant's live tasks as CSV, in chunks of about CHUNK_BYTES."""
    pg = driver_connection(session)
    create_member_table(pg)
    load_members(pg, members)
    statement = sql.SQL(EXPORT).format(schema=sql.Identifier(schema), exported=sql.SQL(EXPORTED))
    buffer = bytearray()
    with pg.cursor() as cursor, cursor.copy(statement, {"tenant": tenant_id}) as copy:
        for row in copy:
            buffer += row
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)
