"""Input shapes of the TaskFlow API. They check types and ranges; services check the rest."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from rest_framework import serializers

from taskflow.errors import InvalidInput
from taskflow.models import TaskStatus
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


class ProjectCreate(StrictSerializer):
    key = serializers.RegexField(r"^[A-Za-z][A-Za-z0-9_-]{0,19}$", max_length=20)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, required=False, max_length=20000)


class ProjectPatch(StrictSerializer):
    key = serializers.RegexField(r"^[A-Za-z][A-Za-z0-9_-]{0,19}$", max_length=20, required=False)
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(allow_blank=True, required=False, max_length=20000)
    version = serializers.IntegerField(required=False, min_value=1)


class TaskCreate(StrictSerializer):
    project_id = serializers.IntegerField(min_value=1)
    external_id = serializers.CharField(max_length=100, required=False, allow_null=True)
    title = serializers.CharField(max_length=500)
    description = serializers.CharField(allow_blank=True, required=False, max_length=20000)
    status = serializers.ChoiceField(choices=[s.value for s in TaskStatus], required=False)
    priority = serializers.IntegerField(min_value=0, max_value=4, required=False)
    assignee_id = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    due_date = serializers.DateField(required=False, allow_null=True)


class TaskPatch(TaskCreate):
    project_id = serializers.IntegerField(min_value=1, required=False)
    title = serializers.CharField(max_length=500, required=False)
    version = serializers.IntegerField(required=False, min_value=1)


class VersionOnly(StrictSerializer):
    version = serializers.IntegerField(required=False, min_value=1)


class CommentCreate(StrictSerializer):
    body = serializers.CharField(max_length=20000)


MAX_ID = 2**63 - 1  # ids are bigint


def task_filters(params: Mapping[str, str]) -> TaskFilters:
    """The task list's filters from query parameters; an empty parameter filters nothing.

    Plain parsing, like the sort and limit: a DRF serializer would cost a third of a
    millisecond on every list request for what is a handful of conversions.
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
