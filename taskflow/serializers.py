"""Input shapes of the TaskFlow API. They check types and ranges; services check the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa
from rest_framework import serializers

from taskflow.errors import InvalidInput
from taskflow.models import MAX_ID, WRITABLE, Project, Task, TaskStatus, columns_with, length_of
from taskflow.selectors import TaskFilters


class StrictSerializer(serializers.Serializer[dict[str, Any]]):
    """Refuses fields it does not know, so a typo is an error instead of a silent no-op."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in sorted(unknown)}
                )
        return super().to_internal_value(data)


# A text column has no length in the database; the API still bounds what it accepts.
MAX_TEXT = 20000
KEY_LENGTH = length_of(Project, "key")
KEY = rf"^[A-Za-z][A-Za-z0-9_-]{{0,{KEY_LENGTH - 1}}}$"


def _input_field(column: sa.Column[Any], *, partial: bool) -> serializers.Field[Any, Any, Any, Any]:
    """The input rule of a writable column, from its type, nullability, default and bounds.

    Optional when the column may be NULL or has a default (and always in a PATCH); a blank
    string is accepted where the empty string is the default.
    """
    options: dict[str, Any] = {}
    default = None if column.default is None else getattr(column.default, "arg", None)
    if partial or column.nullable or column.default is not None:
        options["required"] = False
    if column.nullable:
        options["allow_null"] = True
    info, kind = column.info, column.type
    if "choices" in info:
        return serializers.ChoiceField(choices=list(info["choices"]), **options)
    if isinstance(kind, sa.Integer):
        bounds = {"min_value": info["min"]} if "min" in info else {}
        if "max" in info:
            bounds["max_value"] = info["max"]
        return serializers.IntegerField(**bounds, **options)
    if isinstance(kind, sa.Date):
        return serializers.DateField(**options)
    if isinstance(kind, sa.String):
        if default == "":
            options["allow_blank"] = True
        return serializers.CharField(max_length=kind.length or MAX_TEXT, **options)
    raise TypeError(f"no input rule for {column.name} ({kind})")


def input_serializer(
    name: str,
    entity: Any,
    *,
    partial: bool,
    special: Mapping[str, Callable[[bool], serializers.Field[Any, Any, Any, Any]]] | None = None,
) -> type[StrictSerializer]:
    """The input shape of a create (or, `partial`, a PATCH with its `version`): the entity's
    WRITABLE columns in table order, each by its declaration unless `special` has a rule."""
    special = special or {}
    table = entity.__table__
    fields: dict[str, Any] = {
        column: special[column](partial)
        if column in special
        else _input_field(table.c[column], partial=partial)
        for column in columns_with(entity, WRITABLE)
    }
    if partial:
        fields["version"] = serializers.IntegerField(required=False, min_value=1)
    return type(name, (StrictSerializer,), fields)


def _project_key(partial: bool) -> serializers.Field[Any, Any, Any, Any]:
    if partial:
        return serializers.RegexField(KEY, max_length=KEY_LENGTH, required=False)
    return serializers.RegexField(KEY, max_length=KEY_LENGTH)


ProjectCreate = input_serializer(
    "ProjectCreate", Project, partial=False, special={"key": _project_key}
)
ProjectPatch = input_serializer(
    "ProjectPatch", Project, partial=True, special={"key": _project_key}
)
TaskCreate = input_serializer("TaskCreate", Task, partial=False)
TaskPatch = input_serializer("TaskPatch", Task, partial=True)


class VersionOnly(StrictSerializer):
    version = serializers.IntegerField(required=False, min_value=1)


class CommentCreate(StrictSerializer):
    body = serializers.CharField(max_length=20000)


def task_filters(params: Mapping[str, str]) -> TaskFilters:
    """The task list's filters from query parameters; an empty parameter filters nothing.

    Plain parsing, like the sort and limit: a DRF serializer's field machinery would cost more,
    on every list request, than the handful of conversions it stands for.
    """
    return TaskFilters(
        status=_statuses(params.get("status") or ""),
        project_id=_positive_int(params, "project"),
        assignee_id=_positive_int(params, "assignee"),
        due_before=_date(params, "due_before"),
        due_after=_date(params, "due_after"),
        q=_text(params, "q", max_length=200),
    )


def _statuses(value: str) -> tuple[str, ...]:
    statuses = tuple(s.strip() for s in value.split(",") if s.strip())
    allowed = {s.value for s in TaskStatus}
    bad = [s for s in statuses if s not in allowed]
    if bad:
        raise InvalidInput(
            "status", f"Unknown status {bad[0]!r}; choose from {', '.join(sorted(allowed))}."
        )
    return statuses


def _positive_int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name) or ""
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_ID:
        raise InvalidInput(name, f"{name} must be a positive integer.")
    return int(value)


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name) or ""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(name, f"{name} must be a date such as 2026-11-30.") from exc


def _text(params: Mapping[str, str], name: str, *, max_length: int) -> str | None:
    value = params.get(name) or ""
    if len(value) > max_length:
        raise InvalidInput(name, f"{name} is at most {max_length} characters.")
    return value or None
