"""Dated API versions, pinned per tenant: an older version is a transformation at the edge.

Services, selectors and representations know only the newest shape. Each version after the first
declares the changes that lead to it from the version before; to serve a client at an older
version, the edge (`taskflow.versioning`) upgrades its request through every change newer than its
version, oldest first, and downgrades the response through the same changes, newest first. A
client at the newest version pays one dictionary look-up.

This module declares the versions and what each change does to one item of a resource; it never
reads a request. The changelog (`/api/v1/changelog`, `openapi/CHANGELOG.md`) is generated from the
declarations, so a change cannot ship without its entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from typing import Any

VERSION_HEADER = "TaskFlow-Version"

Item = dict[str, Any]
Query = dict[str, list[str]]

# The route names of /api/v1 (taskflow.urls, the import job routes) and the resource each serves.
ROUTE_RESOURCES: Mapping[str, str] = {
    "projects": "project",
    "project": "project",
    "project-restore": "project",
    "tasks": "task",
    "task": "task",
    "task-restore": "task",
    "tasks-export": "task",
    "task-history": "history",
    "task-comments": "comment",
    "imports": "import_job",
    "import": "import_job",
    "import-cancel": "import_job",
}


@dataclass(frozen=True)
class FieldRename:
    """A field of an item that a version renamed: `new` from that version on, `old` before it,
    and how a client of an older version sees its value (`old_value`; None: as it is)."""

    new: str
    old: str
    old_value: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Change:
    """One difference a version makes to the version before it, for the resources it names.

    `upgrade_request` turns an old client's JSON body into the new shape, `upgrade_query` its
    query parameters (sort keys and filters), `downgrade_item` one item of a response back into the
    old shape; each may change its argument in place and returns it. `downgrade_query` maps the
    query of a next/previous link back into the old client's names. `downgrade_status` maps the
    status of an error response (a problem) to the one the old version answered with, and
    `downgrade_problem` the problem itself (the fields it names) into the old client's names.

    A change whose items differ only by renamed fields declares them (`renamed_fields`) instead
    of a `downgrade_item`: its downgrade_item is derived from them (each old name in the new
    name's place), and a page of rows can be built in the old shape at once (`row_shape`)
    rather than built in the newest shape and then rebuilt.
    """

    description: str
    resources: frozenset[str]
    upgrade_request: Callable[[Item], Item] | None = None
    upgrade_query: Callable[[Query], Query] | None = None
    downgrade_item: Callable[[Item], Item] | None = None
    downgrade_query: Callable[[Query], Query] | None = None
    downgrade_status: Callable[[int], int] | None = None
    downgrade_problem: Callable[[Item], Item] | None = None
    renamed_fields: tuple[FieldRename, ...] = ()

    def __post_init__(self) -> None:
        if not self.renamed_fields:
            return
        derived = getattr(self.downgrade_item, RENAMES, None)
        if self.downgrade_item is not None and derived != self.renamed_fields:  # replace() keeps it
            raise ValueError("a change declares its renamed fields or a downgrade_item, not both")
        object.__setattr__(self, "downgrade_item", _renaming(self.renamed_fields))


RENAMES = "renamed_fields"  # on a downgrade_item derived from a change's renamed fields


def _renaming(renames: tuple[FieldRename, ...]) -> Callable[[Item], Item]:
    """An item's renamed fields under their old names, each in its place, values as old clients
    see them."""
    by_new = {rename.new: rename for rename in renames}

    def old_key_and_value(key: str, value: Any) -> tuple[str, Any]:
        rename = by_new.get(key)
        if rename is None:
            return key, value
        return rename.old, value if rename.old_value is None else rename.old_value(value)

    def downgrade(item: Item) -> Item:
        if by_new.keys().isdisjoint(item):
            return item
        return dict(old_key_and_value(key, value) for key, value in item.items())

    setattr(downgrade, RENAMES, renames)
    return downgrade


def renamed_field(resource: str, old: str, new: str, description: str) -> Change:
    """A field (and the sort key and filter of the same name) that a version renamed."""

    def rename_key(item: Item, before: str, after: str) -> Item:
        if before in item:
            item[after] = item.pop(before)
        return item

    def rename_in_query(query: Query, before: str, after: str) -> Query:
        renamed = {after if key == before else key: values for key, values in query.items()}
        if "sort" in renamed:
            renamed["sort"] = [_rename_sort_keys(value, before, after) for value in renamed["sort"]]
        return renamed

    return Change(
        description=description,
        resources=frozenset({resource}),
        upgrade_request=lambda item: rename_key(item, old, new),
        upgrade_query=lambda query: rename_in_query(query, old, new),
        downgrade_query=lambda query: rename_in_query(query, new, old),
        renamed_fields=(FieldRename(new=new, old=old),),
    )


def _rename_sort_keys(sort: str, before: str, after: str) -> str:
    keys = []
    for key in sort.split(","):
        name = key.strip()
        sign = "-" if name.startswith("-") else ""
        keys.append(sign + after if name.lstrip("-") == before else key)
    return ",".join(keys)


@dataclass(frozen=True)
class ApiVersion:
    """A dated version: what it changed from the one before, and whether it is on its way out."""

    name: str  # an ISO date, "2026-11-01"
    summary: str
    changes: tuple[Change, ...] = ()
    deprecated_on: date | None = None
    sunset_on: date | None = None

    def __post_init__(self) -> None:
        date.fromisoformat(self.name)  # a version is named by the day it shipped

    @property
    def deprecated(self) -> bool:
        return self.deprecated_on is not None


@dataclass(frozen=True)
class Catalog:
    """Every version the API serves, oldest first."""

    versions: tuple[ApiVersion, ...]
    _by_name: dict[str, ApiVersion] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [version.name for version in self.versions]
        if not names:
            raise ValueError("an API has at least one version")
        if names != sorted(set(names)):
            raise ValueError(f"versions must be unique and oldest first: {names}")
        if self.versions[0].changes:
            raise ValueError("the first version has nothing to change from")
        object.__setattr__(self, "_by_name", {v.name: v for v in self.versions})

    @property
    def latest(self) -> ApiVersion:
        return self.versions[-1]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> ApiVersion | None:
        return self._by_name.get(name)

    def pinned(self, name: str) -> ApiVersion:
        """The version a tenant pinned to `name` is served: the oldest still declared at or after it.

        A pin older than every declared version (one past its sunset and removed) moves up to the
        oldest version still served; an empty or malformed pin gets the newest.
        """
        if name in self._by_name:
            return self._by_name[name]
        for version in self.versions:
            if name and version.name >= name:
                return version
        return self.latest

    @cached_property
    def _changes_after(self) -> dict[str, tuple[Change, ...]]:
        after: dict[str, tuple[Change, ...]] = {}
        for index, version in enumerate(self.versions):
            after[version.name] = tuple(
                change for newer in self.versions[index + 1 :] for change in newer.changes
            )
        return after

    def changes_after(self, version: ApiVersion) -> tuple[Change, ...]:
        """The changes a client at `version` does not know, oldest first."""
        return self._changes_after[version.name]

    def changelog(self) -> str:
        """The changelog in Markdown, newest first, one anchor per version."""
        lines = ["# TaskFlow API changelog", ""]
        lines += [
            f"Send `{VERSION_HEADER}: <version>` to call a version other than the one your tenant",
            "is pinned to; every response names the version it was served at.",
            "",
        ]
        for version in reversed(self.versions):
            status = ""
            if version.deprecated_on:
                status = f" — deprecated since {version.deprecated_on.isoformat()}"
                if version.sunset_on:
                    status += f", removed on {version.sunset_on.isoformat()}"
            lines += [f'## <a id="v{version.name}"></a>{version.name}{status}', ""]
            lines += [version.summary, ""]
            lines += [f"- {change.description}" for change in version.changes]
            if version.changes:
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def answered_with(resources: Iterable[str], new: int, old: int, description: str) -> Change:
    """A version that answers some refusals with the status `new` where the one before used `old`."""
    return Change(
        description=description,
        resources=frozenset(resources),
        downgrade_status=lambda status: old if status == new else status,
    )


def upgrade_query(changes: Iterable[Change], resource: str, query: Query) -> Query:
    for change in changes:
        if change.upgrade_query is not None and resource in change.resources:
            query = change.upgrade_query(query)
    return query


def upgrade_request(changes: Iterable[Change], resource: str, body: Item) -> Item:
    for change in changes:
        if change.upgrade_request is not None and resource in change.resources:
            body = change.upgrade_request(body)
    return body


def downgrade_item(changes: Sequence[Change], resource: str, item: Item) -> Item:
    downgrade = item_downgrader(tuple(changes), resource)
    return item if downgrade is None else downgrade(item)


@lru_cache(maxsize=256)
def item_downgrader(changes: tuple[Change, ...], resource: str) -> Callable[[Item], Item] | None:
    """One item of `resource` downgraded through `changes`, newest first (None: nothing to do).

    Chosen once per (version, resource), so a page applies it to each item without asking every
    change about the resource again."""
    steps = [
        change.downgrade_item
        for change in reversed(changes)
        if change.downgrade_item is not None and resource in change.resources
    ]
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def downgrade(item: Item) -> Item:
        for step in steps:
            item = step(item)
        return item

    return downgrade


@dataclass(frozen=True)
class RowShape:
    """How a row of a resource's fields is an item at some version: the names its fields have
    there, in order, and the fields whose values that version shows converted."""

    names: tuple[str, ...]
    conversions: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    def item(self, row: Sequence[Any]) -> Item:
        return self.items([row])[0]

    def items(self, rows: Sequence[Sequence[Any]]) -> list[Item]:
        """A page's rows as items. The rows are one statement's, all as wide: that is checked
        once for the page, not by a strict zip per row (its keyword costs more than the row's
        dict)."""
        names = self.names
        if rows and len(rows[0]) != len(names):
            raise ValueError(f"rows of {len(rows[0])} columns, not the {len(names)} of {names}")
        items = [dict(zip(names, row)) for row in rows]  # noqa: B905 (checked above)
        for name, convert in self.conversions:
            for item in items:
                item[name] = convert(item[name])
        return items


@lru_cache(maxsize=256)
def row_shape(
    changes: tuple[Change, ...], resource: str, fields: tuple[str, ...]
) -> RowShape | None:
    """A row of `fields` (the newest shape's names, in order) as an item before `changes`, built
    once: None when a change downgrades `resource`'s items otherwise than by declared renames
    (the item is then built in the newest shape and downgraded by `item_downgrader`)."""
    names = list(fields)
    steps: list[list[Callable[[Any], Any]]] = [[] for _ in fields]
    for change in reversed(changes):
        if change.downgrade_item is None or resource not in change.resources:
            continue
        if not change.renamed_fields:
            return None
        renames = {rename.new: rename for rename in change.renamed_fields}
        after = [renames[name].old if name in renames else name for name in names]
        if len(set(after)) != len(after):
            return (
                None  # an old name that the item still has under another field: rare, general path
            )
        for index, name in enumerate(names):
            rename = renames.get(name)
            if rename is not None and rename.old_value is not None:
                steps[index].append(rename.old_value)
        names = after
    conversions = tuple(
        (name, convert[0] if len(convert) == 1 else _chained(tuple(convert)))
        for name, convert in zip(names, steps, strict=True)
        if convert
    )
    return RowShape(names=tuple(names), conversions=conversions)


def _chained(steps: tuple[Callable[[Any], Any], ...]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return convert


def downgrade_status(changes: Sequence[Change], resource: str, status: int) -> int:
    for change in reversed(changes):
        if change.downgrade_status is not None and resource in change.resources:
            status = change.downgrade_status(status)
    return status


def downgrade_problem(changes: Sequence[Change], resource: str, problem: Item) -> Item:
    for change in reversed(changes):
        if change.downgrade_problem is not None and resource in change.resources:
            problem = change.downgrade_problem(problem)
    return problem


def downgrade_query(changes: Sequence[Change], resource: str, query: Query) -> Query:
    for change in reversed(changes):
        if change.downgrade_query is not None and resource in change.resources:
            query = change.downgrade_query(query)
    return query


# --- The versions ---------------------------------------------------------------------------------

INITIAL = ApiVersion(
    name="2026-11-01",
    summary=(
        "The first dated version: projects, tasks, comments, task history and bulk imports as "
        "the platform's first release served them. Tenants onboarded before versions existed "
        "are pinned here."
    ),
)

UNPROCESSABLE = ApiVersion(
    name="2026-12-01",
    summary=(
        "Well-formed requests that a rule or the data refuses answer 422 Unprocessable Content "
        "instead of 400, so that 400 always means a malformed request."
    ),
    changes=(
        answered_with(
            ("task", "import_job"),
            422,
            400,
            "`POST /tasks` and `PATCH /tasks/{task_id}` with a `project_id` of no live project, "
            "and `POST /imports` with an empty CSV or an invalid header row, answer 422 (was 400); "
            "the problem's `errors` still name the field.",
        ),
    ),
)


def _due_day(value: Any) -> Any:
    """A due time as the date an older version shows: its UTC day (None stays None)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, str):  # as history recorded it (to_jsonb of a timestamptz)
        return datetime.fromisoformat(value).astimezone(UTC).date().isoformat()
    return value


# A task's `due_at` as an older version shows it: `due_date`, its UTC day, in the field's place.
TASK_DUE_DATE = FieldRename(new="due_at", old="due_date", old_value=_due_day)
_task_due_date = _renaming((TASK_DUE_DATE,))


def _task_due_at(item: Item) -> Item:
    """An older client's `due_date` (a date) is written as `due_at`: that whole day (00:00 UTC,
    or the time the task already has on that day; taskflow.serializers.MomentField)."""
    if "due_date" in item:
        item["due_at"] = item.pop("due_date")
    return item


def _history_due_date(entry: Item) -> Item:
    changes = entry.get("changes")
    if isinstance(changes, dict) and "due_at" in changes:
        entry["changes"] = _task_due_date(
            {key: [_due_day(v) for v in pair] if key == "due_at" else pair
             for key, pair in changes.items()}
        )  # fmt: skip
    return entry


NEW_DUE_NAME = re.compile(r"\bdue_at\b")


def _task_due_problem(problem: Item) -> Item:
    """A refusal in an older client's names: the field it sent as `due_date` (the edge renamed it
    `due_at`) is `due_date` again, in each error and in sort keys a message lists, and the detail
    names the refused fields, so the client sees what to fix in the request it wrote. A problem
    about unknown query parameters names the client's own parameters: left alone."""
    errors = problem.get("errors")
    if not isinstance(errors, list) or "allowed_query_parameters" in problem:
        return problem
    renamed = False
    for error in errors:
        if not isinstance(error, dict):
            continue
        if error.get("field") == "due_at":
            error["field"], renamed = "due_date", True
        message = error.get("message")
        if isinstance(message, str) and NEW_DUE_NAME.search(message):
            error["message"], renamed = NEW_DUE_NAME.sub("due_date", message), True
    if renamed:
        fields = dict.fromkeys(str(e.get("field")) for e in errors if isinstance(e, dict))
        problem["detail"] = f"The request has invalid fields: {', '.join(fields)}."
    return problem


def _due_sort(before: str, after: str) -> Callable[[Query], Query]:
    def rename(query: Query) -> Query:
        if "sort" not in query:
            return query
        # A new dict: the edge compares it with what it gave to see whether anything changed.
        return {**query, "sort": [_rename_sort_keys(v, before, after) for v in query["sort"]]}

    return rename


DUE_AT = ApiVersion(
    name="2026-12-06",
    summary=(
        "Tasks are due at a time, not on a day: `due_at` (an RFC 3339 date-time, UTC) replaces "
        "`due_date`. Older versions keep `due_date`, the UTC day of `due_at`; a date they write "
        "means 00:00 UTC of that day (a task already due at a time of that day keeps it)."
    ),
    changes=(
        Change(
            description=(
                "Tasks: `due_date` (date) is replaced by `due_at` (date-time, UTC), in "
                "representations, `POST /tasks`, `PATCH /tasks/{task_id}`, the sort key "
                "(`sort=due_at`, `-priority,due_at`), task history (`changes.due_at`) and the "
                "CSV export's column; `due_at` also takes a date (that day, 00:00 UTC). The "
                "filters `due_before` and `due_after` take a date-time too (a date still means "
                "the whole UTC day). Imports take either column."
            ),
            resources=frozenset({"task"}),
            upgrade_request=_task_due_at,
            upgrade_query=_due_sort("due_date", "due_at"),
            renamed_fields=(TASK_DUE_DATE,),
            downgrade_query=_due_sort("due_at", "due_date"),
            downgrade_problem=_task_due_problem,
        ),
        Change(
            description="Task history shows a task's due time as `due_at` (was `due_date`).",
            resources=frozenset({"history"}),
            downgrade_item=_history_due_date,
        ),
    ),
)

CATALOG = Catalog(versions=(INITIAL, UNPROCESSABLE, DUE_AT))


def task_due_field(version: ApiVersion) -> str:
    """The name a client at `version` knows a task's due time by (a CSV export's column too)."""
    return "due_at" if version.name >= DUE_AT.name else "due_date"
