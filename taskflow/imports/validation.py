"""Set-based validation of the staged rows: each statement writes its faults to import_rejects.

Each fault is (line, column, reason); a row may have several. Nothing is checked row by row in
Python and no query runs per row: projects and members are hash-joined once. External ids
repeated in the file are found up front (one hash aggregate over the staged rows): the write
goes in batches, and a repeat in two batches would silently update the row the first wrote.
Rows naming a soft-deleted task are looked for only when the write left rows unwritten. Casts
that could fail are guarded, so one bad cell never aborts the statement.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from taskflow.imports.columns import FILE_COLUMNS, ID_VALUE
from taskflow.imports.staging import physical_line

# The staged text, normalised as each file column declares (empty cells become NULL).
NORMALISED = (
    "SELECT s.line, "
    + ", ".join(f"{c.sql(c.normalised)} AS {c.name}" for c in FILE_COLUMNS)
    + " FROM import_staging s"
)

LIVE_PROJECTS = (
    "SELECT key, id FROM {schema}.projects WHERE tenant_id = %(tenant)s AND deleted_at IS NULL"
)

# Every checked column's fault, numbered in the file's column order (a line's order in the
# report); built from the declarations once.
_CHECKED = tuple(c for c in FILE_COLUMNS if c.fault)
FAULTS = ",\n    ".join(f"{c.sql(c.fault or '')} AS {c.name}" for c in _CHECKED)
FAULT_ROWS = ", ".join(f"({i}, '{c.name}', f.{c.name})" for i, c in enumerate(_CHECKED, 1))
FAULT_COLUMNS = ", ".join(f"f.{c.name}" for c in _CHECKED)

FIND_REJECTS = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT f.line, p.ord, p.col, p.reason
FROM (
  SELECT n.line,
    {faults}
  FROM ({normalised}) n
  LEFT JOIN ({live_projects}) lp ON lp.key = n.project
  LEFT JOIN import_members m ON m.email = n.assignee
  OFFSET 0
) f
CROSS JOIN LATERAL (VALUES {fault_rows}) AS p(ord, col, reason)
WHERE num_nonnulls({fault_columns}) > 0
  AND p.reason IS NOT NULL
"""

# A row that names a task by id must name a live task of the tenant, once in the file, and agree
# with its external id; run only for a file with an id column. Ordered first in a line's faults.
FIND_ID_FAULTS = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT f.line, 0, 'id', f.reason
FROM (
  SELECT n.line, CASE
    WHEN k.id IS NULL AND {id_value} IS NULL THEN 'must be the id of a task'
    WHEN k.id IS NULL THEN 'no task of this tenant has this id'
    WHEN k.deleted_at IS NOT NULL THEN 'belongs to a deleted task; restore it first'
    WHEN n.external_id IS NOT NULL AND n.external_id IS DISTINCT FROM k.external_id
      THEN 'is the id of a task with another external_id'
    WHEN d.id IS NOT NULL THEN 'is repeated in the file'
  END AS reason
  FROM ({normalised}) n
  LEFT JOIN {schema}.tasks k ON k.tenant_id = %(tenant)s AND k.id = {id_value}
  LEFT JOIN (
    SELECT {id_value} AS id FROM ({normalised}) n WHERE n.id IS NOT NULL
    GROUP BY 1 HAVING count(*) > 1
  ) d ON d.id = k.id
  WHERE n.id IS NOT NULL
) f
WHERE f.reason IS NOT NULL
"""

# Checks that need the whole file (before the write) or the table (after it, only when the write
# left rows unwritten).
FIND_DUPLICATES = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT n.line, 1, 'external_id', 'is repeated in the file (also on line '
       || {other_line} || ')'
FROM ({normalised}) n
JOIN (
  SELECT nullif(btrim(external_id), '') AS external_id, min(line) AS first, max(line) AS last
  FROM import_staging WHERE nullif(btrim(external_id), '') IS NOT NULL
  GROUP BY 1 HAVING count(*) > 1
) d ON d.external_id = n.external_id
"""

FIND_DELETED = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT n.line, 1, 'external_id', 'belongs to a deleted task; restore it first'
FROM ({normalised}) n
JOIN {schema}.tasks t
  ON t.tenant_id = %(tenant)s AND t.external_id = n.external_id AND t.deleted_at IS NOT NULL
WHERE NOT EXISTS (SELECT 1 FROM import_rejects r WHERE r.line = n.line)
"""


def _compose(template: str, schema: str) -> sql.Composed:
    """A statement for a tenant's schema (the name comes from its binding, never built here)."""
    name = sql.Identifier(schema)
    return sql.SQL(template).format(
        normalised=sql.SQL(NORMALISED),
        live_projects=sql.SQL(LIVE_PROJECTS).format(schema=name),
        schema=name,
        faults=sql.SQL(FAULTS),
        fault_rows=sql.SQL(FAULT_ROWS),
        fault_columns=sql.SQL(FAULT_COLUMNS),
        id_value=sql.SQL(ID_VALUE),
        other_line=sql.SQL(
            physical_line("CASE WHEN n.line = d.first THEN d.last ELSE d.first END")
        ),
    )


def rejected_lines(pg: psycopg.Connection) -> int:
    row = pg.execute("SELECT count(DISTINCT line) FROM import_rejects").fetchone()
    return int(row[0]) if row else 0


def find_rejects(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> int:
    """Record every fault a row shows on its own; the number of rejected lines."""
    pg.execute(_compose(FIND_REJECTS, schema), {"tenant": tenant_id})
    return rejected_lines(pg)


def find_id_faults(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> int:
    """Record ids that name no live task of the tenant, or one twice; the rejected lines after."""
    pg.execute(_compose(FIND_ID_FAULTS, schema), {"tenant": tenant_id})
    return rejected_lines(pg)


def find_duplicates(pg: psycopg.Connection) -> int:
    """Record external ids repeated within the file; the number of rejected lines after it."""
    pg.execute(_compose(FIND_DUPLICATES, "pg_temp"))
    return rejected_lines(pg)


def find_deleted(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> int:
    """Record rows whose external id belongs to a soft-deleted task; how many there are."""
    return pg.execute(_compose(FIND_DELETED, schema), {"tenant": tenant_id}).rowcount
