"""The one write of an import: INSERT ... SELECT ... ON CONFLICT (tenant_id, external_id) DO UPDATE.

One statement, so the statement-level history triggers write the history of every inserted and
every updated row in two set-based INSERTs. Rows without an external_id never conflict and are
inserted. An update touches only the columns the file has, and skips a row whose values would
not change (no version bump, no history row), so re-importing a file is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from taskflow.imports.columns import FILE_COLUMNS, FileColumn
from taskflow.imports.validation import LIVE_PROJECTS, NORMALISED
from taskflow.models import Task, default_of

# The upsert's conflict key: a file column that is matched on, never set by an update.
CONFLICT_KEY = "external_id"
# Column of the file -> column of tasks it sets on update.
TARGETS: dict[str, str] = {c.name: c.target for c in FILE_COLUMNS if c.name != CONFLICT_KEY}


def _written(column: FileColumn) -> str:
    """The value inserted for a file column; NULL becomes the target's declared default."""
    value = column.sql(column.written)
    default = default_of(Task, column.target)
    if default is None:
        return value
    literal = str(default) if isinstance(default, int) else "'" + default.replace("'", "''") + "'"
    return f"coalesce({value}, {literal})"


INSERTED = ", ".join(c.target for c in FILE_COLUMNS)
VALUES = ", ".join(_written(c) for c in FILE_COLUMNS)

UPSERT = """
WITH written AS (
  INSERT INTO {schema}.tasks AS t (tenant_id, {inserted})
  SELECT %(tenant)s, {values}
  FROM ({normalised}) n
  JOIN ({live_projects}) lp ON lp.key = n.project
  LEFT JOIN import_members m ON m.email = n.assignee
  {skip_rejected}
  ON CONFLICT (tenant_id, external_id) DO UPDATE
    SET {assignments}, version = t.version + 1, updated_at = now()
    WHERE t.deleted_at IS NULL AND ({current}) IS DISTINCT FROM ({incoming})
  RETURNING xmax = 0 AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""

SKIP_REJECTED = "WHERE NOT EXISTS (SELECT 1 FROM import_rejects r WHERE r.line = n.line)"


@dataclass(frozen=True)
class Written:
    inserted: int
    updated: int


def _statement(schema: str, columns: tuple[str, ...], skip_rejected: bool) -> sql.Composed:
    targets = [sql.Identifier(TARGETS[c]) for c in columns if c in TARGETS]
    name = sql.Identifier(schema)
    return sql.SQL(UPSERT).format(
        schema=name,
        inserted=sql.SQL(INSERTED),
        values=sql.SQL(VALUES),
        normalised=sql.SQL(NORMALISED),
        live_projects=sql.SQL(LIVE_PROJECTS).format(schema=name),
        skip_rejected=sql.SQL(SKIP_REJECTED if skip_rejected else ""),
        assignments=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(c) for c in targets),
        current=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in targets),
        incoming=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(c) for c in targets),
    )


def upsert_tasks(
    pg: psycopg.Connection,
    *,
    schema: str,
    tenant_id: int,
    columns: tuple[str, ...],
    skip_rejected: bool,
) -> Written:
    """Write the staged rows (all of them, or those without a reject); count inserts and updates."""
    row = pg.execute(_statement(schema, columns, skip_rejected), {"tenant": tenant_id}).fetchone()
    assert row is not None
    return Written(inserted=int(row[0]), updated=int(row[1]))
