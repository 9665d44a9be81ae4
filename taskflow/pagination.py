"""Keyset pagination with signed, opaque composite cursors.

A sort is a list of keys (created_at, updated_at, due_date, priority, title), each ascending or
descending, always ended by id. Nullable keys sort by an expression with a place for NULL
(due_at -> CASE WHEN due_at IS NULL THEN 'infinity' ELSE due_at END; a CASE, which row-level
security lets into an index scan, taskflow.models) that the partial indexes also use, so NULL
rows are paged like any other. A cursor holds the boundary row's key values, its direction, and the
sort, filters, list and tenant it was made for, signed with an HMAC derived from the secret key: a
tampered cursor, or one used under another sort, filter, list or tenant, is refused.

After a cursor, a sort in one direction is one row comparison that an index range serves; a
mixed-direction sort (-priority,due_date) is read as a few such ranges, one after another,
each in the order of an index made for that sort (migration 0002).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from django.conf import settings
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from taskflow.errors import InvalidCursor, InvalidInput
from tenants.driver_reads import read_rows

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class SortField:
    """A sortable field: the SQL expression it orders by and how its value goes in a cursor.

    A field an evolution moves to another column (taskflow.due) names, in cursors, the column
    it is read from. `older` is the name cursors made before the move used, and `from_older`
    turns such a cursor's value into this field's, so those cursors still page; `newer` is the
    name of the field that replaces this one, so a cursor made after the move is refused with
    a problem that says to start again, never served a wrong page.
    """

    name: str
    expression: Callable[[Any], ColumnElement[Any]]
    sql_type: sa.types.TypeEngine[Any]
    value_of: Callable[[Any], Any]
    older: str | None = None
    from_older: Callable[[Any], Any] | None = None
    newer: str | None = None


@dataclass(frozen=True)
class SortKey:
    field: SortField
    descending: bool


@dataclass(frozen=True)
class Sort:
    keys: tuple[SortKey, ...]
    id_descending: bool

    @property
    def text(self) -> str:
        return self._text(lambda field: field.name)

    @property
    def older_text(self) -> str | None:
        """The sort as cursors made before a field's move name it (None: no field moved)."""
        if not any(k.field.older for k in self.keys):
            return None
        return self._text(lambda field: field.older or field.name)

    @property
    def newer_text(self) -> str | None:
        """The sort as cursors made after a field's move name it (None: none moves)."""
        if not any(k.field.newer for k in self.keys):
            return None
        return self._text(lambda field: field.newer or field.name)

    def _text(self, name: Callable[[SortField], str]) -> str:
        parts = [("-" if k.descending else "") + name(k.field) for k in self.keys]
        return ",".join([*parts, "-id" if self.id_descending else "id"])

    def from_older(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A cursor's values made under `older_text`, as this sort's."""
        moved = [k.field.from_older for k in self.keys]
        return tuple(
            move(value) if move is not None else value
            for move, value in zip([*moved, None], values, strict=True)
        )


def parse_sort(value: str | None, fields: dict[str, SortField], default: str) -> Sort:
    """`-priority,due_date` -> Sort; id is always the last key, in the last key's direction.

    The grammar is exact (openapi.sort_param describes it): keys joined by commas, no blanks
    or spaces, each field once, `id`/`-id` only last; an empty value is the default."""
    raw = (value or default).split(",")
    keys: list[SortKey] = []
    seen: set[str] = set()
    for index, part in enumerate(raw):
        name, descending = part.removeprefix("-"), part.startswith("-")
        if name == "id" and index == len(raw) - 1:
            continue
        if name not in fields:
            raise InvalidInput("sort", f"Cannot sort by {name!r}; choose from {', '.join(fields)}.")
        if name in seen:
            raise InvalidInput("sort", f"{name!r} appears twice in the sort.")
        seen.add(name)
        keys.append(SortKey(fields[name], descending))
    last = raw[-1] if raw else ""
    id_descending = (
        last.startswith("-")
        if last.removeprefix("-") == "id"
        else bool(keys and keys[-1].descending)
    )
    return Sort(tuple(keys), id_descending)


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError as exc:
        raise InvalidInput("limit", "limit must be an integer.") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"limit must be between 1 and {MAX_LIMIT}.")
    return limit


# --- Cursors ------------------------------------------------------------------------------------


# json.dumps with options makes an encoder on every call; these are made once. The same text:
# json.dumps(value, **options) is JSONEncoder(**options).encode(value).
_CURSOR_JSON = json.JSONEncoder(separators=(",", ":"))
_FINGERPRINT_JSON = json.JSONEncoder(default=str)


def _cursor_key() -> bytes:
    return _derived_key(settings.SECRET_KEY)


@functools.cache
def _derived_key(secret: str) -> bytes:
    """The cursor-signing key: derived from the secret key, so it rotates with it."""
    return hmac.new(secret.encode(), b"taskflow/keyset-cursor/v1", hashlib.sha256).digest()


def _signature(payload: bytes) -> bytes:
    """A cursor's signature: its payload's HMAC-SHA256, cut to 16 bytes (hmac.digest: OpenSSL's
    one call, the bytes hmac.new(...).digest() gives without its Python object)."""
    return hmac.digest(_cursor_key(), payload, "sha256")[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Cursor:
    values: tuple[Any, ...]
    backwards: bool


@dataclass(frozen=True)
class CursorScope:
    """What a cursor is only valid for: a tenant's list of one resource, in one sort and filter."""

    tenant_id: int
    sort: str
    filters: str
    resource: str  # the list it pages: "projects", "tasks", "task-history", ...


def encode_cursor(cursor: Cursor, scope: CursorScope) -> str:
    payload = _CURSOR_JSON.encode(
        {
            "v": list(cursor.values),
            "b": cursor.backwards,
            "t": scope.tenant_id,
            "s": scope.sort,
            "f": scope.filters,
            "r": scope.resource,
        }
    ).encode()
    signature = _signature(payload)
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(token: str, scope: CursorScope, sort: Sort | None = None) -> Cursor:
    """The cursor's boundary, if it was signed for `scope`.

    With `sort`, a cursor made under its fields' older columns is taken, its values moved to
    the new ones; one made under their newer columns is refused with a problem that says to
    start again (taskflow.due)."""
    try:
        payload_text, signature_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("The cursor is malformed.") from exc
    expected = _signature(payload)
    if not hmac.compare_digest(signature, expected):
        raise InvalidCursor("The cursor's signature does not match.")
    data = json.loads(payload)
    if data["t"] != scope.tenant_id:
        raise InvalidCursor("The cursor belongs to another tenant.")
    if data.get("r") != scope.resource:
        raise InvalidCursor("The cursor was made for another list.")
    values = tuple(data["v"])
    if data["s"] != scope.sort:
        if sort is not None and data["s"] == sort.newer_text:
            raise InvalidCursor(
                "The cursor was made while this list was ordered by a newer column than this "
                "server reads now; request the first page again (without a cursor)."
            )
        if sort is None or data["s"] != sort.older_text:
            raise InvalidCursor("The cursor was made for another sort.")
        if len(values) != len(sort.keys) + 1:
            raise InvalidCursor("The cursor does not fit this sort.")
        values = sort.from_older(values)
    if data["f"] != scope.filters:
        raise InvalidCursor("The cursor was made for other filters.")
    return Cursor(values, bool(data["b"]))


def filters_fingerprint(filters: dict[str, Any]) -> str:
    canonical = _FINGERPRINT_JSON.encode(
        {k: v for k, v in sorted(filters.items()) if v not in (None, "", [])}
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- Queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    previous_cursor: str | None


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _runs(descending: Sequence[bool]) -> list[range]:
    """The order's keys grouped into runs of consecutive keys with the same direction."""
    runs: list[range] = []
    start = 0
    for i in range(1, len(descending) + 1):
        if i == len(descending) or descending[i] != descending[start]:
            runs.append(range(start, i))
            start = i
    return runs


def _after(
    exprs: Sequence[ColumnElement[Any]], descending: Sequence[bool], values: Sequence[Any]
) -> list[ColumnElement[bool]]:
    """Rows strictly after `values` in the order (exprs, descending), as disjoint branches.

    One branch per run of same-direction keys: equal on the runs before it, and after the
    boundary on its own keys as one row comparison. Each branch is a single range of an index
    in the sort's order, read in that order (where one OR of the branches would make the planner
    filter or sort), so a page deep in a mixed-direction sort costs what page 1 does. A later
    branch's rows all come before an earlier one's.
    """
    branches = []
    for run in _runs(descending):
        equal = [exprs[j] == values[j] for j in range(run.start)]
        row = sa.tuple_(*(exprs[j] for j in run)) if len(run) > 1 else exprs[run.start]
        bound = sa.tuple_(*(values[j] for j in run)) if len(run) > 1 else values[run.start]
        branches.append(sa.and_(*equal, row < bound if descending[run.start] else row > bound))
    return branches


def _ordered(exprs: Sequence[ColumnElement[Any]], walk: Sequence[bool]) -> list[Any]:
    return [e.desc() if d else e.asc() for e, d in zip(exprs, walk, strict=True)]


@dataclass(frozen=True)
class Listing:
    """What a list reads, split so its SQL is built once per process and shape.

    `build(shape)` returns the statement (filters as named bind parameters) and is only called
    the first time a shape is seen; `params` are this request's values for those parameters.
    Building a statement and its cache key cost more CPU than running the query it compiles to.
    """

    build: Callable[[Any], sa.Select[Any]]
    shape: Hashable
    params: dict[str, Any]


@functools.lru_cache(maxsize=1024)
def _page_statement(
    build: Callable[[Any], sa.Select[Any]],
    shape: Hashable,
    table: sa.Table,
    sort: Sort,
    walk: tuple[bool, ...],
    branch: int | None,
) -> sa.Select[Any]:
    """The listing's statement in the walk's order, after the bound row through `branch` (one of
    _after's branches; None for a first page), limited by the parameter `page_limit`. The bound
    row's values are parameters `key_0`, `key_1`, ... as text, cast to each key's type."""
    exprs = [key.field.expression(table.c) for key in sort.keys] + [table.c.id]
    types = [key.field.sql_type for key in sort.keys] + [sa.BigInteger()]
    statement = build(shape)
    if branch is not None:
        bounds = [
            sa.cast(sa.bindparam(f"key_{j}", type_=sa.String()), t) for j, t in enumerate(types)
        ]
        statement = statement.where(_after(exprs, walk, bounds)[branch])
    limit = sa.bindparam("page_limit", type_=sa.Integer())
    return statement.order_by(*_ordered(exprs, walk)).limit(limit)


def paginate(
    session: Session | sa.Connection,
    listing: Listing,
    *,
    table: sa.Table,
    sort: Sort,
    scope: CursorScope,
    cursor_token: str | None,
    limit: int,
) -> Page[Any]:
    """One page of the listing's rows in `sort` order after (or before) the cursor's boundary row.

    The sort fields' expressions are taken from `table`'s columns; the listing selects at least
    the sort's fields and id. `session` is a bound session or a bound connection
    (tenants.binding.tenant_reads); either way the page's statements go to the driver as
    compiled text (tenants.driver_reads).
    """
    connection = session.connection() if isinstance(session, Session) else session
    descending = [key.descending for key in sort.keys] + [sort.id_descending]
    cursor = decode_cursor(cursor_token, scope, sort) if cursor_token else None
    backwards = bool(cursor and cursor.backwards)
    # Going backwards, walk the order reversed from the boundary, then turn the page around.
    walk = tuple(d != backwards for d in descending)
    params = dict(listing.params)
    branches: Sequence[int | None] = [None]
    if cursor is not None:
        if len(cursor.values) != len(descending):
            raise InvalidCursor("The cursor does not fit this sort.")
        params.update((f"key_{j}", str(value)) for j, value in enumerate(cursor.values))
        # Branches in the order their rows come: those sharing most of the boundary's keys
        # first. Usually the first has a page's worth; the next is read only when it runs out.
        branches = range(len(_runs(walk)) - 1, -1, -1)
    rows: list[Any] = []
    for branch in branches:
        query = _page_statement(listing.build, listing.shape, table, sort, walk, branch)
        params["page_limit"] = limit + 1 - len(rows)
        rows += read_rows(connection, query, params)
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()

    def boundary(row: Any, towards_start: bool) -> str:
        values = (*(_json_value(k.field.value_of(row)) for k in sort.keys), row.id)
        return encode_cursor(Cursor(values, towards_start), scope)

    if not rows:
        return Page([], None, None)
    has_next = more if not backwards else True
    has_previous = (cursor is not None) if not backwards else more
    return Page(
        rows,
        boundary(rows[-1], False) if has_next else None,
        boundary(rows[0], True) if has_previous else None,
    )
