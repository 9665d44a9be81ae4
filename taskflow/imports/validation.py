"""Set-based validation of the staged rows: each statement writes its faults to import_rejects.

Each fault is (line, column, reason); a row may have several. Nothing is checked row by row in
Python and no query runs per row: projects and members are hash-joined once. Two checks cost a
pass over the whole file or the table, so they run only when the write shows they can matter:
an external id repeated in the file makes the upsert fail (it cannot affect a row twice), and
one of a soft-deleted task leaves its row unwritten. Casts that could fail are guarded, so one
bad cell never aborts the statement.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

STATUSES = ("todo", "in_progress", "done", "cancelled")
MAX_EXTERNAL_ID = 100
MAX_TITLE = 500
MAX_PRIORITY = 4

# The staged text, trimmed; empty cells become NULL (description stays as written).
NORMALISED = """
SELECT s.line,
       nullif(btrim(s.external_id), '') AS external_id,
       nullif(btrim(s.project), '') AS project,
       nullif(btrim(s.title), '') AS title,
       s.description,
       nullif(lower(btrim(s.status)), '') AS status,
       nullif(btrim(s.priority), '') AS priority,
       nullif(lower(btrim(s.assignee)), '') AS assignee,
       nullif(btrim(s.due_date), '') AS due_date
FROM import_staging s
"""

LIVE_PROJECTS = (
    "SELECT key, id FROM {schema}.projects WHERE tenant_id = %(tenant)s AND deleted_at IS NULL"
)

# A calendar date as YYYY-MM-DD, by integer arithmetic (no cast that could fail; far cheaper
# than make_date and interval arithmetic on every row).
VALID_DATE = """
CASE WHEN n.due_date !~ '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$' THEN false
     ELSE substr(n.due_date, 1, 4)::int >= 1
      AND substr(n.due_date, 6, 2)::int BETWEEN 1 AND 12
      AND substr(n.due_date, 9, 2)::int BETWEEN 1 AND CASE substr(n.due_date, 6, 2)::int
            WHEN 2 THEN CASE WHEN mod(substr(n.due_date, 1, 4)::int, 4) = 0
                              AND (mod(substr(n.due_date, 1, 4)::int, 100) <> 0
                                   OR mod(substr(n.due_date, 1, 4)::int, 400) = 0)
                             THEN 29 ELSE 28 END
            WHEN 4 THEN 30 WHEN 6 THEN 30 WHEN 9 THEN 30 WHEN 11 THEN 30
            ELSE 31 END
END
"""

FIND_REJECTS = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT f.line, p.ord, p.col, p.reason
FROM (
  SELECT n.line,
    CASE WHEN length(n.external_id) > {max_external_id}
      THEN 'is longer than {max_external_id} characters' END AS external_id,
    CASE WHEN n.project IS NULL THEN 'is required'
         WHEN lp.id IS NULL THEN 'no live project has this key' END AS project,
    CASE WHEN n.title IS NULL THEN 'is required'
         WHEN length(n.title) > {max_title} THEN 'is longer than {max_title} characters'
    END AS title,
    CASE WHEN n.status NOT IN ({statuses}) THEN 'must be one of {status_list}' END AS status,
    CASE WHEN n.priority !~ '^[0-9]+$' OR length(n.priority) > 6
           THEN 'must be an integer from 0 to {max_priority}'
         WHEN n.priority::int > {max_priority} THEN 'must be an integer from 0 to {max_priority}'
    END AS priority,
    CASE WHEN n.assignee IS NULL THEN NULL
         WHEN m.email IS NULL THEN 'no member of this tenant has this email'
         WHEN m.user_id IS NULL THEN 'several members have this email' END AS assignee,
    CASE WHEN NOT ({valid_date}) THEN 'must be a date as YYYY-MM-DD' END AS due_date
  FROM ({normalised}) n
  LEFT JOIN ({live_projects}) lp ON lp.key = n.project
  LEFT JOIN import_members m ON m.email = n.assignee
  OFFSET 0
) f
CROSS JOIN LATERAL (VALUES
  (1, 'external_id', f.external_id), (2, 'project', f.project), (3, 'title', f.title),
  (4, 'status', f.status), (5, 'priority', f.priority), (6, 'assignee', f.assignee),
  (7, 'due_date', f.due_date)
) AS p(ord, col, reason)
WHERE num_nonnulls(f.external_id, f.project, f.title, f.status, f.priority, f.assignee,
                   f.due_date) > 0
  AND p.reason IS NOT NULL
"""

# Checks that need the whole file or the table, run only when the write says they may matter.
FIND_DUPLICATES = """
INSERT INTO import_rejects (line, ord, "column", reason)
SELECT n.line, 1, 'external_id', 'is repeated in the file (also on line '
       || CASE WHEN n.line = d.first THEN d.last ELSE d.first END || ')'
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
        valid_date=sql.SQL(VALID_DATE),
        schema=name,
        statuses=sql.SQL(", ").join(sql.Literal(s) for s in STATUSES),
        status_list=sql.SQL(", ".join(STATUSES)),
        max_external_id=sql.SQL(str(MAX_EXTERNAL_ID)),
        max_title=sql.SQL(str(MAX_TITLE)),
        max_priority=sql.SQL(str(MAX_PRIORITY)),
    )


def rejected_lines(pg: psycopg.Connection) -> int:
    row = pg.execute("SELECT count(DISTINCT line) FROM import_rejects").fetchone()
    return int(row[0]) if row else 0


def find_rejects(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> int:
    """Record every fault a row shows on its own; the number of rejected lines."""
    pg.execute(_compose(FIND_REJECTS, schema), {"tenant": tenant_id})
    return rejected_lines(pg)


def find_duplicates(pg: psycopg.Connection) -> int:
    """Record external ids repeated within the file; the number of rejected lines after it."""
    pg.execute(_compose(FIND_DUPLICATES, "pg_temp"))
    return rejected_lines(pg)


def find_deleted(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> int:
    """Record rows whose external id belongs to a soft-deleted task; how many there are."""
    return pg.execute(_compose(FIND_DELETED, schema), {"tenant": tenant_id}).rowcount
