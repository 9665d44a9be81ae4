"""The columns an import file may have, each declared once, and the check of its header row.

`FILE_COLUMNS` is the one list of the import's columns: the staging table, the normalised rows,
the validation, the upsert and the export (taskflow.imports.staging, validation, writing, export)
are all built from it once, when their modules are imported, never per file or per row. Limits
and defaults come from the model (taskflow.models).

The header check is used twice: by the upload (so a wrong header is a 400 before any job exists)
and by the pipeline (so a file placed on disk by other means is held to the same rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskflow import due
from taskflow.models import MAX_ID, PRIORITY_MAX, PRIORITY_MIN, Task, TaskStatus, length_of
from tenants.problems import Problem

# The staged text trimmed, an empty cell NULL (`{name}` is the file's column).
TRIMMED = "nullif(btrim(s.{name}), '')"
# Trimmed and lower-cased: values compared without regard to case.
FOLDED = "nullif(lower(btrim(s.{name})), '')"

# A calendar date as YYYY-MM-DD, by integer arithmetic (no cast that could fail; far cheaper
# than make_date and interval arithmetic on every row).
VALID_DATE = """
CASE WHEN n.{name} !~ '^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$' THEN false
     ELSE substr(n.{name}, 1, 4)::int >= 1
      AND substr(n.{name}, 6, 2)::int BETWEEN 1 AND 12
      AND substr(n.{name}, 9, 2)::int BETWEEN 1 AND CASE substr(n.{name}, 6, 2)::int
            WHEN 2 THEN CASE WHEN mod(substr(n.{name}, 1, 4)::int, 4) = 0
                              AND (mod(substr(n.{name}, 1, 4)::int, 100) <> 0
                                   OR mod(substr(n.{name}, 1, 4)::int, 400) = 0)
                             THEN 29 ELSE 28 END
            WHEN 4 THEN 30 WHEN 6 THEN 30 WHEN 9 THEN 30 WHEN 11 THEN 30
            ELSE 31 END
END
"""


# A due time: a date, or a date-time with its offset (a date's check on its first ten
# characters, then the time's shape, so the cast to timestamptz cannot fail).
VALID_MOMENT = (
    VALID_DATE.replace("n.{name}", "left(n.{name}, 10)")
    + " AND n.{name} ~ '^.{{10}}([Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{{1,6}})?"
    "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?$'"
)
_MOMENT = "'must be a date-time with its offset, such as 2030-01-02T09:00:00Z, or a date'"
_START_OF_DAY = "({day}::timestamp AT TIME ZONE 'UTC')"
DUE_AT_VALUE = (
    "CASE WHEN length(n.{name}) = 10 THEN "
    + _START_OF_DAY.format(day="n.{name}::date")
    + " ELSE n.{name}::timestamptz END"
)


@dataclass(frozen=True)
class FileColumn:
    """A column of an import file: how its text is staged, checked, written and exported.

    Each SQL piece names the file's column `{name}` and the task column `{target}`; `n` is a
    normalised staged row, `t` a task, `lp` the row's live project, `p` a task's project and `m`
    the row's (or the task's) member.
    """

    name: str  # in the file's header, and in the staging table
    target: str  # the column of tasks it sets
    normalised: str = TRIMMED  # the staged text as it is checked and written
    fault: str | None = None  # a CASE giving why the value is refused, else NULL
    written: str = "n.{name}"  # the value written (the target's default stands in for NULL)
    exported: str = "t.{target}"  # the value an export writes
    required: bool = False
    meaning: str = ""  # for people: the README's table of import columns is built from it

    def sql(self, piece: str) -> str:
        return piece.format(name=self.name, target=self.target)


def _too_long(name: str, target: str) -> str:
    limit = length_of(Task, target)
    return f"WHEN length(n.{name}) > {limit} THEN 'is longer than {limit} characters'"


# The staged id as a bigint, NULL unless it is one: usable in a join before the row is checked.
ID_VALUE = (
    "CASE WHEN n.id ~ '^[0-9]+$' AND (length(n.id) < 19"
    f" OR (length(n.id) = 19 AND n.id <= '{MAX_ID}')) THEN n.id::bigint END"
)

_STATUSES = tuple(s.value for s in TaskStatus)
_PRIORITY = f"'must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}'"

FILE_COLUMNS: tuple[FileColumn, ...] = (
    # An existing task's id: the row updates that task (what an export writes, so that its file
    # imports back unchanged). Checked by its own statement (validation.FIND_ID_FAULTS), never
    # inserted.
    FileColumn(
        "id",
        "id",
        written=ID_VALUE,
        exported="t.id",
        meaning="an existing task's id: the row updates that task (an export writes it)",
    ),
    FileColumn(
        "external_id",
        "external_id",
        fault=f"CASE {_too_long('external_id', 'external_id')} END",
        meaning="your own key, at most 100 characters: importing it again updates that task",
    ),
    FileColumn(
        "project",
        "project_id",
        fault="CASE WHEN n.project IS NULL THEN 'is required'"
        " WHEN lp.id IS NULL THEN 'no live project has this key' END",
        written="lp.id",
        exported="p.key",
        required=True,
        meaning="the key of one of the tenant's live projects",
    ),
    FileColumn(
        "title",
        "title",
        fault=f"CASE WHEN n.title IS NULL THEN 'is required' {_too_long('title', 'title')} END",
        required=True,
        meaning="at most 500 characters",
    ),
    # The description stays as written: its spaces may matter.
    FileColumn(
        "description", "description", normalised="s.{name}", meaning="any text, kept as written"
    ),
    FileColumn(
        "status",
        "status",
        normalised=FOLDED,
        fault="CASE WHEN n.status NOT IN ("
        + ", ".join(f"'{s}'" for s in _STATUSES)
        + f") THEN 'must be one of {', '.join(_STATUSES)}' END",
        meaning="one of " + ", ".join(_STATUSES) + " (any case); empty: todo",
    ),
    FileColumn(
        "priority",
        "priority",
        fault=f"CASE WHEN n.priority !~ '^[0-9]+$' OR length(n.priority) > 6 THEN {_PRIORITY}"
        f" WHEN n.priority::int > {PRIORITY_MAX} THEN {_PRIORITY} END",
        written="n.{name}::smallint",
        meaning=f"an integer from {PRIORITY_MIN} to {PRIORITY_MAX}",
    ),
    FileColumn(
        "assignee",
        "assignee_id",
        normalised=FOLDED,
        fault="CASE WHEN n.assignee IS NULL THEN NULL"
        " WHEN m.email IS NULL THEN 'no member of this tenant has this email'"
        " WHEN m.user_id IS NULL THEN 'several members have this email' END",
        written="m.user_id",
        exported="m.email",
        meaning="the email of a member of the tenant (any case)",
    ),
    # When a task is due: either column (the `tasks_due_at` evolution, taskflow.due). The write
    # (taskflow.imports.writing) sets the tasks column the `tasks.due` switch names from them.
    FileColumn(
        "due_date",
        "due_date",
        fault="CASE WHEN NOT (" + VALID_DATE + ") THEN 'must be a date as YYYY-MM-DD' END",
        written="n.{name}::date",
        meaning="a date as YYYY-MM-DD (00:00 UTC of that day, or the time the task already has on"
        " that day); or the column due_at",
    ),
    FileColumn(
        "due_at",
        "due_at",
        fault="CASE WHEN NOT (" + VALID_MOMENT + ") THEN " + _MOMENT + " END",
        written=DUE_AT_VALUE,
        meaning="a date-time with its offset, such as 2030-01-02T09:00:00Z, or a date (as due_date)",
    ),
)

# The file columns that say when a task is due, and the one value they write, as the tasks
# column the process reads (taskflow.due): due_at wins where a row has both.
DUE_FILE_COLUMNS = ("due_date", "due_at")


# Whether a staged row's due value is a whole day: a date, in `due_at` (which wins) or else in
# `due_date`.
DUE_IS_DAY = "(n.due_at IS NULL OR length(n.due_at) = 10)"


def kept_due_at(*, current: str, incoming: str, is_day: str) -> str:
    """The `due_at` an update writes: the task's own (`current`) where the row gives that time's
    UTC day as a date, else the row's (`incoming`). A date means 00:00 UTC only on another day,
    as an old client's `due_date` does through the API (taskflow.services): an old client's
    export (days only) imports back changing nothing. Plain comparisons of columns a join or
    the updated row gives: no subquery per row (a distributed table's would not plan on Citus)."""
    return (
        f"CASE WHEN {is_day} AND ({current} AT TIME ZONE 'UTC')::date"
        f" = ({incoming} AT TIME ZONE 'UTC')::date THEN {current} ELSE {incoming} END"
    )


def due_value(served: due.Column) -> str:
    """The SQL value a staged row (`n`) writes to the tasks column `served`."""
    if served == due.DUE_AT:
        return f"coalesce({DUE_AT_VALUE.format(name='due_at')}, {_START_OF_DAY.format(day='n.due_date::date')})"
    return (
        "coalesce(CASE WHEN length(n.due_at) = 10 THEN n.due_at::date"
        " ELSE (n.due_at::timestamptz AT TIME ZONE 'UTC')::date END, n.due_date::date)"
    )


COLUMNS: tuple[str, ...] = tuple(c.name for c in FILE_COLUMNS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in FILE_COLUMNS if c.required)
MAX_HEADER_BYTES = 64 * 1024


class InvalidHeader(Problem):
    """The header row is missing, names unknown columns, misses required ones or repeats one.

    422: the upload is a well-formed body whose content is refused (400 before API version
    2026-12-01)."""

    status = 422
    title = "Invalid CSV header"

    def __init__(
        self,
        detail: str,
        *,
        unknown: Sequence[str] = (),
        missing: Sequence[str] = (),
        duplicated: Sequence[str] = (),
    ) -> None:
        super().__init__(
            detail,
            unknown_columns=list(unknown),
            missing_columns=list(missing),
            duplicated_columns=list(duplicated),
            allowed_columns=list(COLUMNS),
        )


def normalise(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower()


def check_header(names: Sequence[str]) -> tuple[str, ...]:
    """The header's column names, normalised, or InvalidHeader naming every problem at once."""
    columns = tuple(normalise(n) for n in names)
    if not any(columns):
        raise InvalidHeader(
            "A header row is required: " + ", ".join(COLUMNS) + ".", missing=REQUIRED_COLUMNS
        )
    unknown = [c for c in dict.fromkeys(columns) if c not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    duplicated = [c for c in dict.fromkeys(columns) if columns.count(c) > 1]
    if unknown or missing or duplicated:
        parts = []
        if unknown:
            parts.append("unknown columns: " + ", ".join(c or "(blank)" for c in unknown))
        if missing:
            parts.append("missing required columns: " + ", ".join(missing))
        if duplicated:
            parts.append("repeated columns: " + ", ".join(duplicated))
        raise InvalidHeader(
            "The header row is invalid (" + "; ".join(parts) + ").",
            unknown=unknown,
            missing=missing,
            duplicated=duplicated,
        )
    return columns
