"""Input shapes of the TaskFlow API. They check types and ranges; services check the rest."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from taskflow.models import TaskStatus


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


class TaskListParams(serializers.Serializer[dict[str, Any]]):
    status = serializers.CharField(required=False)
    project = serializers.IntegerField(required=False, min_value=1)
    assignee = serializers.IntegerField(required=False, min_value=1)
    due_before = serializers.DateField(required=False)
    due_after = serializers.DateField(required=False)
    q = serializers.CharField(required=False, max_length=200)

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        allowed = {s.value for s in TaskStatus}
        bad = [s for s in statuses if s not in allowed]
        if bad:
            raise serializers.ValidationError(
                f"Unknown status {bad[0]!r}; choose from {', '.join(sorted(allowed))}."
            )
        return statuses
