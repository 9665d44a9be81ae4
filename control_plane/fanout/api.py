"""Operator API of the fan-out on the public host: start, list, watch, resume, cancel, retry.

Staff bearer tokens only; errors are problem+json through the project's one handler.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from control_plane.fanout import runs
from control_plane.fanout.models import COUNT_MAX, MigrationRun, StepStatus
from control_plane.http.openapi import RUN_DETAIL_QUERY, RUN_LIST, RunShape, StepShape
from control_plane.http.ops_actions import OpsAction, action, operator
from control_plane.tenancy.api import OpsView
from taskflow.openapi import LOCATION_HEADER, NOT_BLANK, problems, refuse_longer_than_described
from tenants.problems import NotFound

LIST_LIMIT = 50


class JsonString(serializers.CharField):
    """A JSON string, never a number coerced to one (the description says string)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        refuse_longer_than_described(self, data)
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "maxLength": 20, "pattern": runs.TIMEOUT_PATTERN})
class TimeoutField(JsonString):
    """A PostgreSQL timeout (500ms, 5s, 5min, 1h). Its pattern is described here and checked
    by the runs service (runs.TIMEOUT)."""


# A failure budget as the API takes it, whole: a count, or a percentage with an optional fraction.
# (runs.parse_failure_budget is more lenient, for the CLI; its bounds still apply, as 422s.)
BUDGET_PATTERN = r"^([0-9]{1,10}|[0-9]{1,3}(\.[0-9]{1,6})?%)$"


@extend_schema_field({"type": "string", "maxLength": 12, "pattern": BUDGET_PATTERN})
class BudgetField(JsonString):
    """`max_failures`: "3" failed tenants, or "5%" of the run's tenants."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not re.fullmatch(BUDGET_PATTERN[1:-1], value):
            raise serializers.ValidationError(
                'A count ("3") or a percentage ("5%", "2.5%") of the run\'s tenants.'
            )
        return value


def named(max_length: int, **options: Any) -> JsonString:
    """A name refused when blank (DRF's blank check), described as not blank."""
    return JsonString(
        min_length=1, max_length=max_length, validators=[RegexValidator(NOT_BLANK)], **options
    )


class JsonBoolean(serializers.BooleanField):
    """A JSON true or false, not 0, 1 or "yes" (the description says boolean)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class MigrationRunInputSerializer(serializers.Serializer[dict[str, Any]]):
    """Shape only; the runs service decides what is valid (revision, tenants, budget)."""

    tenants = serializers.ListField(child=named(40), required=False)
    to = named(64, required=False, default="head")
    canary = serializers.IntegerField(min_value=0, max_value=COUNT_MAX, required=False, default=1)
    concurrency = serializers.IntegerField(min_value=1, max_value=64, required=False, default=2)
    batch_size = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=50)
    max_failures = BudgetField(max_length=12, required=False, default="0", trim_whitespace=False)
    verify = JsonBoolean(required=False, default=False)
    lock_timeout = TimeoutField(max_length=20, required=False, default="5s")
    statement_timeout = TimeoutField(max_length=20, required=False, default="5min")
    confirm_downgrade = JsonBoolean(
        required=False,
        default=False,
        help_text="true to start a run that takes any schema to an older revision; without it "
        "such a run is refused with a 409 problem naming this field, and nothing starts.",
    )


class ResumeInputSerializer(serializers.Serializer[dict[str, Any]]):
    """An optional body: resuming a run that goes down to an older revision must be confirmed."""

    confirm_downgrade = JsonBoolean(
        required=False,
        default=False,
        help_text="true to resume a run that takes schemas to an older revision; without it "
        "such a resume is refused with a 409 problem naming this field.",
    )


CONFIRM_FIELD = "confirm_downgrade"


def _ask_for_confirmation(exc: runs.DowngradeNotConfirmed) -> runs.DowngradeNotConfirmed:
    """The service's refusal, naming the field that confirms it (the CLI and admin ask in
    their own words: --yes-downgrade, a confirmation page)."""
    return runs.DowngradeNotConfirmed(
        f"{exc.detail} Send `{CONFIRM_FIELD}: true` to confirm it.",
        errors=[{"field": CONFIRM_FIELD, "message": "Required to be true for a downgrade."}],
    )


def _run(run_id: int) -> MigrationRun:
    run = MigrationRun.objects.select_related("created_by").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"No migration run {run_id}.")
    return run


def _state(run: MigrationRun, request: Request) -> dict[str, Any]:
    status = request.query_params.get("status", "")
    if status and status not in StepStatus.values:
        status = ""
    state = runs.run_state(run, status=status, search=request.query_params.get("q", ""))
    state["url"] = f"/ops/v1/migration-runs/{run.pk}"
    return state


@extend_schema_view(
    get=extend_schema(
        operation_id="listMigrationRuns",
        summary="Recent migration runs, newest first",
        responses={200: RUN_LIST},
    ),
    post=extend_schema(
        operation_id="startMigrationRun",
        summary="Start a migration fan-out",
        request=MigrationRunInputSerializer,
        parameters=[LOCATION_HEADER],
        responses={202: RunShape, **problems(409, 422)},
    ),
)
class MigrationRunCollection(OpsView):
    def get(self, request: Request) -> Response:
        recent: QuerySet[MigrationRun] = MigrationRun.objects.select_related("created_by")[
            :LIST_LIMIT
        ]
        results = [
            {**runs.run_state(run, limit=0), "url": f"/ops/v1/migration-runs/{run.pk}"}
            for run in recent
        ]
        return Response({"results": results})

    def post(self, request: Request) -> Response:
        shape = MigrationRunInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        options = dict(shape.validated_data)
        confirmed = options.pop(CONFIRM_FIELD)
        try:
            run = runs.start_run(**options, created_by=operator(request), allow_downgrade=confirmed)
        except runs.DowngradeNotConfirmed as exc:
            raise _ask_for_confirmation(exc) from exc
        location = f"/ops/v1/migration-runs/{run.pk}"
        return Response(_state(run, request), status=202, headers={"Location": location})


@extend_schema_view(
    get=extend_schema(
        operation_id="getMigrationRun", summary="A migration run", responses={200: RunShape}
    )
)
class MigrationRunDetail(OpsView):
    query_parameters = {"get": RUN_DETAIL_QUERY}

    def get(self, request: Request, run_id: int) -> Response:
        return Response(_state(_run(run_id), request))


@action("resumeMigrationRun", "Resume a paused or failed run", RunShape)
class ResumeMigrationRun(OpsAction):
    query_parameters = {"post": RUN_DETAIL_QUERY}
    body = ResumeInputSerializer

    def body_of(self, request: Request) -> Any:
        # The body is optional; one that is not JSON (a bodiless form post) confirms nothing.
        is_json = (request.content_type or "").startswith("application/json")
        return (request.data or {}) if is_json else {}

    def act(self, request: Request, data: dict[str, Any], run_id: int) -> Any:
        try:
            run = runs.resume_run(_run(run_id), allow_downgrade=data[CONFIRM_FIELD])
        except runs.DowngradeNotConfirmed as exc:
            raise _ask_for_confirmation(exc) from exc
        return _state(run, request)


@action("cancelMigrationRun", "Cancel a run", RunShape)
class CancelMigrationRun(OpsAction):
    query_parameters = {"post": RUN_DETAIL_QUERY}
    answer_status = 200

    def act(self, request: Request, data: dict[str, Any], run_id: int) -> Any:
        return _state(runs.cancel_run(_run(run_id)), request)


@action("retryTenantMigration", "Retry one tenant's failed step", StepShape)
class RetryTenantMigration(OpsAction):
    def act(self, request: Request, data: dict[str, Any], run_id: int, slug: str) -> Any:
        return runs.step_state(runs.retry_tenant(_run(run_id), slug))
