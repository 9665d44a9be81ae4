"""Input shapes of the TaskFlow API. They check types and ranges; services check the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from taskflow.models import WRITABLE, Project, Task, columns_with, length_of


class TextField(serializers.CharField):
    """A JSON string, never a number or boolean coerced to one (the description says string).

    `maxLength` holds for the string as sent: DRF checks the length after trimming surrounding
    whitespace, which would accept a value longer than the description allows."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        refuse_longer_than_described(self, data)
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}],
        "description": "An RFC 3339 date-time with its offset (answered in UTC), or a date: "
        "00:00 UTC of that day (a task already due at a time of that day keeps it).",
    }
)
class MomentField(serializers.DateTimeField):
    """An RFC 3339 date-time with its offset (kept in UTC), or a date (YYYY-MM-DD): a whole day.

    A date is what a client of an API version before 2026-12-06 writes as `due_date`
    (taskflow.api_versions): 00:00 UTC of that day, where a task already due at some time of
    that day keeps its time (taskflow.services)."""

    default_error_messages = {
        "invalid": "A date-time with its offset, such as 2026-11-30T09:00:00Z, or a date.",
        "naive": "A date-time must name its offset from UTC, such as Z or +01:00.",
    }

    def to_internal_value(self, value: Any) -> datetime | date:  # type: ignore[override]
        if not isinstance(value, str):
            self.fail("invalid")
        if len(value) == 10:
            try:
                return date.fromisoformat(value)
            except ValueError:
                self.fail("invalid")
        if "T" not in value.upper():
            self.fail("invalid")
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            self.fail("invalid")
        if moment.tzinfo is None:
            self.fail("naive")
        return moment.astimezone(UTC)


def refuse_longer_than_described(field: serializers.CharField, data: str) -> None:
    """The described maxLength, checked on the value as sent (before DRF trims it)."""
    if field.max_length is not None and len(data) > field.max_length:
        field.fail("max_length", max_length=field.max_length)


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


# What DRF's CharField refuses: a NUL anywhere (PostgreSQL text cannot hold one), and as blank
# the empty string or only characters str.strip() removes (str.isspace: ECMA's \s differs, so
# they are listed). A field refused when blank carries NOT_BLANK as its pattern: some character
# that is neither blank nor NUL, and no NUL; one that may be blank carries NO_NUL. DRF's own
# checks run first, so these validators describe the rules (drf-spectacular turns them into the
# field's `pattern`) more than they enforce them.
NO_NUL = r"^[^\u0000]*$"
_BLANK = (
    r"\t\n\u000b\u000c\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Unambiguous, so matching and generating it stay linear: blanks, the first other character, the rest.
NOT_BLANK = rf"^[{_BLANK}]*[^\u0000{_BLANK}][^\u0000]*$"


def no_nul() -> RegexValidator:
    return RegexValidator(NO_NUL, "Null characters are not allowed.")


def not_blank() -> RegexValidator:
    """The description of "not blank" (see NOT_BLANK); pair it with min_length=1."""
    return RegexValidator(NOT_BLANK, "This field may not be blank.")


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
    if isinstance(kind, sa.DateTime):
        return MomentField(**options)
    if isinstance(kind, sa.Date):
        return serializers.DateField(**options)
    if isinstance(kind, sa.String):
        if default == "":
            options["allow_blank"] = True
            options["validators"] = [no_nul()]
        else:
            # Refused when blank (DRF's allow_blank=False): described by minLength and pattern.
            options["min_length"] = 1
            options["validators"] = [not_blank()]
        return TextField(max_length=kind.length or MAX_TEXT, **options)
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
    body = TextField(min_length=1, max_length=MAX_TEXT, validators=[not_blank()])
