"""The write of an import: INSERT ... SELECT ... ON CONFLICT (tenant_id, external_id) DO UPDATE,
and, for rows that name a task by its `id`, one UPDATE ... FROM; a plain INSERT ... SELECT when
the tenant has no task with an external id yet (nothing can conflict).

Set-based statements over one batch of staged lines at a time (a range of `line`), so progress
moves while the rows are written, and the statement-level history triggers write the history of
a batch's inserted and updated rows in a few INSERTs from transition tables of a batch's size
(a whole file's would spill to disk). INSERT ... SELECT from the staging table, never COPY into
the tenant's table: Citus refuses COPY into tables under row-level security.

Rows with an id update that task (the validation made sure it is a live task of the tenant);
rows without one upsert by external_id, and rows with neither are inserted. An update touches only the columns the file has, and skips a
row whose values would not change (no version bump, no history row), so re-importing a file, an
export's included, is harmless.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import psycopg
from psycopg import sql

from taskflow import due
from taskflow.imports.columns import (
    DUE_FILE_COLUMNS,
    DUE_IS_DAY,
    FILE_COLUMNS,
    FileColumn,
    due_value,
    kept_due_at,
)
from taskflow.imports.validation import LIVE_PROJECTS, NORMALISED
from taskflow.models import Task, default_of

# The upsert's conflict key: a file column that is matched on, never set by an update.
CONFLICT_KEY = "external_id"
# A task's id: matched on by the update, never inserted nor set.
ID_KEY = "id"
ID_COLUMN = next(c for c in FILE_COLUMNS if c.name == ID_KEY)
# The columns written as declared; the due columns are written as one value (Plan).
WRITTEN = tuple(c for c in FILE_COLUMNS if c.name != ID_KEY and c.name not in DUE_FILE_COLUMNS)


def _written(column: FileColumn) -> str:
    """The value inserted for a file column; NULL becomes the target's declared default."""
    value = column.sql(column.written)
    default = default_of(Task, column.target)
    if default is None:
        return value
    literal = str(default) if isinstance(default, int) else "'" + default.replace("'", "''") + "'"
    return f"coalesce({value}, {literal})"


@dataclass(frozen=True)
class Plan:
    """The write's columns and values for a process that reads the tasks column `served`
    (taskflow.due): the file's due columns set that column only, so the write works before the
    expand (no due_at) and after the contract (no due_date); the expand's trigger sets the
    other while both exist. Written to `due_at`, a date keeps the time a task already has on
    that day (columns.kept_due_at); `due_date` needs nothing: the expand's trigger leaves
    `due_at` alone when `due_date` does not change."""

    inserted: str
    values: str
    named_values: str  # the same values, named as the columns they set (the update's rows)
    targets: dict[str, str]  # column of the file -> column of tasks it sets on update
    keeps_due_time: bool  # the due value is `due_at`: a date keeps a task's time of that day
    values_keeping_due_time: str  # `values`, the due value kept from the task `cur`


@functools.cache
def plan(served: due.Column) -> Plan:
    values = [(c.target, _written(c)) for c in WRITTEN] + [(served, due_value(served))]
    targets = {c.name: c.target for c in WRITTEN if c.name != CONFLICT_KEY}
    targets.update((name, served) for name in DUE_FILE_COLUMNS)
    keeps = served == due.DUE_AT
    kept = kept_due_at(current="cur.due_at", incoming=due_value(served), is_day=DUE_IS_DAY)
    named = [f"{value} AS {target}" for target, value in values]
    return Plan(
        inserted=", ".join(target for target, _ in values),
        values=", ".join(value for _, value in values),
        named_values=", ".join(named + ([f"{DUE_IS_DAY} AS due_is_day"] if keeps else [])),
        targets=targets,
        keeps_due_time=keeps,
        values_keeping_due_time=", ".join(v for _, v in values[:-1]) + f", {kept}",
    )


def _incoming(written: Plan, target: sql.Identifier) -> sql.Composable:
    """What the update by id sets `target` to from its row `i`: a date keeps the time of day the
    task `t` is already due at."""
    if written.keeps_due_time and target == sql.Identifier(due.DUE_AT):
        return sql.SQL(kept_due_at(current="t.due_at", incoming="i.due_at", is_day="i.due_is_day"))
    return sql.SQL("i.{}").format(target)


UPSERT = """
WITH written AS (
  INSERT INTO {schema}.tasks AS t (tenant_id, {inserted})
  SELECT %(tenant)s, {values}
  FROM ({normalised}) n
  JOIN ({live_projects}) lp ON lp.key = n.project
  LEFT JOIN import_members m ON m.email = n.assignee {current_task}
  WHERE true {without_id} {lines} {skip_rejected}
  {on_conflict}
  RETURNING xmax = 0 AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""

UPDATE_BY_ID = """
WITH written AS (
  UPDATE {schema}.tasks AS t
  SET {assignments}, version = t.version + 1, updated_at = now()
  FROM (
    SELECT {task_id} AS task_id, {named_values}
    FROM ({normalised}) n
    JOIN ({live_projects}) lp ON lp.key = n.project
    LEFT JOIN import_members m ON m.email = n.assignee
    WHERE n.id IS NOT NULL {lines} {skip_rejected}
  ) AS i
  WHERE t.tenant_id = %(tenant)s AND t.id = i.task_id AND t.deleted_at IS NULL
    AND ({current}) IS DISTINCT FROM ({incoming})
  RETURNING 1
)
SELECT count(*) FROM written
"""

ON_CONFLICT = """ON CONFLICT (tenant_id, external_id) DO UPDATE
    SET {assignments}, version = t.version + 1, updated_at = now()
    WHERE t.deleted_at IS NULL AND ({current}) IS DISTINCT FROM ({incoming})"""

# Rows without an id, when the file has the column. Never written for a file without it: the
# planner would guess the share of rows whose (absent) id is NULL at 0.5%, and nest loops over
# a batch it believes tiny.
WITHOUT_ID = "AND n.id IS NULL"
SKIP_REJECTED = "AND NOT EXISTS (SELECT 1 FROM import_rejects r WHERE r.line = n.line)"
# One batch: staged lines after %(after)s, up to %(upto)s.
LINES = "AND n.line > %(after)s AND n.line <= %(upto)s"
# The task a row's external id names, whose due time a date keeps (Plan.keeps_due_time): a join
# on the unique key, not a subquery per row.
CURRENT_TASK = (
    "LEFT JOIN {schema}.tasks cur ON cur.tenant_id = %(tenant)s AND cur.external_id = n.external_id"
)
# Any task of the tenant with an external id (a probe of the unique index): none, and the file's
# rows (its repeats already rejected) cannot conflict with anything but a concurrent writer's.
HAS_EXTERNAL_IDS = (
    "SELECT EXISTS (SELECT 1 FROM {schema}.tasks"
    " WHERE tenant_id = %(tenant)s AND external_id IS NOT NULL)"
)


@dataclass(frozen=True)
class Written:
    inserted: int
    updated: int


def _targets(written: Plan, columns: tuple[str, ...]) -> list[sql.Identifier]:
    """The task columns an update sets: those the file has (never its keys), each once."""
    targets = dict.fromkeys(written.targets[c] for c in columns if c in written.targets)
    return [sql.Identifier(target) for target in targets]


def _update_by_id(schema: str, columns: tuple[str, ...], skip_rejected: bool) -> sql.Composed:
    """The update of the batch's rows that name a task by id."""
    written = plan(due.served())
    targets = _targets(written, columns)
    name = sql.Identifier(schema)
    return sql.SQL(UPDATE_BY_ID).format(
        schema=name,
        task_id=sql.SQL(ID_COLUMN.sql(ID_COLUMN.written)),
        named_values=sql.SQL(written.named_values),
        normalised=sql.SQL(NORMALISED),
        live_projects=sql.SQL(LIVE_PROJECTS).format(schema=name),
        lines=sql.SQL(LINES),
        skip_rejected=sql.SQL(SKIP_REJECTED if skip_rejected else ""),
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(c, _incoming(written, c)) for c in targets
        ),
        current=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in targets),
        incoming=sql.SQL(", ").join(_incoming(written, c) for c in targets),
    )


def _statement(
    schema: str, columns: tuple[str, ...], skip_rejected: bool, *, upsert: bool
) -> sql.Composed:
    """The insert of the batch's rows without an id: an upsert, or a plain INSERT."""
    written = plan(due.served())
    targets = _targets(written, columns)
    name = sql.Identifier(schema)
    # Only an upsert of a file with a due column can write a date over a task's time.
    keep = upsert and written.keeps_due_time and any(c in DUE_FILE_COLUMNS for c in columns)
    on_conflict = sql.SQL(ON_CONFLICT).format(
        assignments=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(c) for c in targets),
        current=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in targets),
        incoming=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(c) for c in targets),
    )
    return sql.SQL(UPSERT).format(
        schema=name,
        inserted=sql.SQL(written.inserted),
        values=sql.SQL(written.values_keeping_due_time if keep else written.values),
        normalised=sql.SQL(NORMALISED),
        live_projects=sql.SQL(LIVE_PROJECTS).format(schema=name),
        current_task=sql.SQL(CURRENT_TASK).format(schema=name) if keep else sql.SQL(""),
        without_id=sql.SQL(WITHOUT_ID if ID_KEY in columns else ""),
        lines=sql.SQL(LINES),
        skip_rejected=sql.SQL(SKIP_REJECTED if skip_rejected else ""),
        on_conflict=on_conflict if upsert else sql.SQL(""),
    )


def has_external_ids(pg: psycopg.Connection, *, schema: str, tenant_id: int) -> bool:
    """Whether any task of the tenant has an external id (else a plain INSERT will do)."""
    statement = sql.SQL(HAS_EXTERNAL_IDS).format(schema=sql.Identifier(schema))
    row = pg.execute(statement, {"tenant": tenant_id}).fetchone()
    return bool(row and row[0])


def write_batch(
    pg: psycopg.Connection,
    *,
    schema: str,
    tenant_id: int,
    columns: tuple[str, ...],
    lines: tuple[int, int],
    skip_rejected: bool,
    upsert: bool = True,
) -> Written:
    """Write the staged rows of lines (after, upto] (all, or those without a reject); count
    inserts and updates. `upsert=False` inserts (a conflict then raises UniqueViolation)."""
    params = {"tenant": tenant_id, "after": lines[0], "upto": lines[1]}
    by_id = 0
    if ID_KEY in columns:
        updated = pg.execute(_update_by_id(schema, columns, skip_rejected), params).fetchone()
        assert updated is not None
        by_id = int(updated[0])
    statement = _statement(schema, columns, skip_rejected, upsert=upsert)
    row = pg.execute(statement, params).fetchone()
    assert row is not None
    return Written(inserted=int(row[0]), updated=int(row[1]) + by_id)
