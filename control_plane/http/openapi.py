"""How drf-spectacular describes both APIs: the bearer scheme, path ids, declared query
parameters, the request id header, the version headers of /api/v1, the problem responses every
operation can give, and the shapes of the control plane's own resources (import jobs, tenants,
migration runs, moves).

Views say what is particular to them with `extend_schema`; what holds for every operation is
added here once. Nothing here runs on a request that is not a schema request.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers

from control_plane.fanout.models import Operation, RunStatus, Stage, StepStatus
from control_plane.imports.models import ImportMode, ImportStatus
from control_plane.tenancy.models import MoveStatus
from control_plane.tenancy.serializers import TenantSerializer
from taskflow.openapi import (
    EVERY_VERSION_HEADERS,
    MAX_ID,
    NO_NUL_TEXT,
    RATE_LIMIT,
    RATE_LIMIT_POLICY,
    REQUEST_ID,
    RETRY_AFTER,
    VERSION_REQUEST_HEADER,
    VERSION_RESPONSE_HEADERS,
    QueryParam,
    problems,
    query_parameters_of,
)
from tenants.models import Isolation, TenantStatus

PATH_VARIABLE = re.compile(r"{(\w+)}")
ID_SCHEMA = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
SLUG_SCHEMA = {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}  # Django's slug converter


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer <token>`: what Swagger UI's Authorize button asks for."""

    target_class = "control_plane.identity.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token: tenant members' on a tenant host, staff's on "
            "the public host.",
        }


class ContractSchema(AutoSchema):
    """AutoSchema plus what every operation shares (see the module docstring)."""

    @property
    def _tenant_api(self) -> bool:
        return self.path.startswith("/api/")

    def get_description(self) -> str:  # type: ignore[override]
        """The method's docstring: a view class's docstring speaks to its readers, not clients."""
        method = getattr(self.view, self.method.lower(), None)
        return get_doc(method) if method is not None else ""

    def _get_request_body(self, direction: str = "request") -> Any:
        """The body, marked required where the view says its method needs one
        (`request_body_required = {"post"}`): drf-spectacular cannot tell for a raw body."""
        body = super()._get_request_body(direction)
        required: frozenset[str] = getattr(self.view, "request_body_required", frozenset())
        if body is not None and self.method.lower() in required:
            body["required"] = True
        return body

    def get_override_parameters(self) -> list[Any]:
        ids = [
            OpenApiParameter(name, ID_SCHEMA, OpenApiParameter.PATH, description="An id.")
            if name.endswith("_id")
            else OpenApiParameter(name, SLUG_SCHEMA, OpenApiParameter.PATH, description="A slug.")
            for name in PATH_VARIABLE.findall(self.path)
            if name.endswith("_id") or name == "slug"
        ]
        shared: list[Any] = [RETRY_AFTER, REQUEST_ID, *EVERY_VERSION_HEADERS]
        if self._tenant_api:
            shared += [
                VERSION_REQUEST_HEADER,
                *VERSION_RESPONSE_HEADERS,
                RATE_LIMIT,
                RATE_LIMIT_POLICY,
            ]
        return [
            *ids,
            *query_parameters_of(self.view, self.method),
            *shared,
            *super().get_override_parameters(),
        ]

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        """The operation's own responses, plus the problems every operation can answer with."""
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        common = [400, 401, 403]
        if PATH_VARIABLE.search(self.path):
            common.append(404)
        common.append(429)  # rate limits (control_plane.ratelimits): any operation
        if self._tenant_api:
            common.append(503)
        for key, response in problems(*common).items():
            status, media_type = key
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    response, str(status), media_types=[media_type], direction=direction
                )
        return responses


# --- Shapes of the control plane's resources -----------------------------------------------------

# C0 and C1 controls (NUL among them) are refused in a key (a NUL could never reach its column),
# by both APIs that take one; the description says the same.
IDEMPOTENCY_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
CONTROL_CHARACTER = re.compile(r"[\u0000-\u001f\u007f-\u009f]")
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "maxLength": 200, "pattern": IDEMPOTENCY_PATTERN},
    OpenApiParameter.HEADER,
    description="Repeat a request with the same key to get the same result, not a second one.",
)

TENANT_LIST = inline_serializer("TenantList", {"results": TenantSerializer(many=True)})
TENANT_LIST_QUERY = (
    QueryParam("status", "Only tenants in this status.", enum=tuple(TenantStatus.values)),
)
ONBOARDING_ACCEPTED = inline_serializer(
    "OnboardingAccepted",
    {
        "tenant": TenantSerializer(),
        "owner_token": serializers.CharField(help_text="The owner's API token."),
        "replayed": serializers.BooleanField(),
    },
)
TRANSITION = extend_schema(
    summary="Move a tenant to another status",
    request=None,
    responses={200: TenantSerializer, **problems(409)},
)


class ImportFileShape(serializers.Serializer[Any]):
    name = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField()
    sha256 = serializers.CharField(allow_blank=True)

    class Meta:
        ref_name = "ImportFile"


class ImportJobShape(serializers.Serializer[Any]):
    """What control_plane.imports.api.job_repr returns."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ImportStatus.choices)
    phase = serializers.CharField(allow_null=True)
    mode = serializers.ChoiceField(choices=ImportMode.choices)
    file = ImportFileShape()
    columns = serializers.ListField(child=serializers.CharField())
    rows_read = serializers.IntegerField()
    inserted = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    rejected = serializers.IntegerField()
    progress = serializers.FloatField()
    rows_per_second = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    files_removed_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    links = inline_serializer(
        "ImportJobLinks",
        {"self": serializers.CharField(), "errors": serializers.CharField(),
         "cancel": serializers.CharField()},
    )  # fmt: skip

    class Meta:
        ref_name = "ImportJob"


IMPORT_JOB_LIST = inline_serializer("ImportJobList", {"results": ImportJobShape(many=True)})

IMPORT_UPLOAD = inline_serializer(
    "ImportUpload",
    {
        "file": serializers.FileField(help_text="The CSV file (the export's columns)."),
        "mode": serializers.ChoiceField(choices=ImportMode.choices, required=False),
    },
)

ME = inline_serializer(
    "Me",
    {
        "user": inline_serializer(
            "MeUser",
            {"id": serializers.IntegerField(), "email": serializers.CharField(allow_blank=True)},
        ),
        "tenant": serializers.CharField(),
        "role": serializers.ChoiceField(choices=["viewer", "member", "admin"]),
    },
)


class StepShape(serializers.Serializer[Any]):
    """One tenant's step of a migration run (control_plane.fanout.runs.step_state)."""

    schema = serializers.CharField()
    tenant = serializers.CharField(allow_null=True)
    canary = serializers.BooleanField()
    batch = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=StepStatus.choices)
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.FloatField(allow_null=True)
    revisions_before = serializers.DictField(allow_null=True)
    revisions_after = serializers.DictField(allow_null=True)
    error = serializers.CharField(allow_blank=True, allow_null=True)
    progress = serializers.DictField(help_text="A backfill run's rows and keyset position here.")

    class Meta:
        ref_name = "MigrationStep"


class RunShape(serializers.Serializer[Any]):
    """A migration run as the API, the run page and the CLI show it (runs.run_state)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    stage = serializers.ChoiceField(choices=Stage.choices)
    finished = serializers.BooleanField()
    requested_revision = serializers.CharField()
    operation = serializers.ChoiceField(choices=Operation.choices)
    options = serializers.DictField()
    target = serializers.DictField()
    tenants = serializers.ListField(child=serializers.CharField(), allow_null=True)
    strategy = serializers.DictField()
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    counts = serializers.DictField(child=serializers.IntegerField())
    progress = serializers.FloatField()
    rows_written = serializers.IntegerField()
    steps = StepShape(many=True)
    url = serializers.CharField()

    class Meta:
        ref_name = "MigrationRun"


RUN_LIST = inline_serializer("MigrationRunList", {"results": RunShape(many=True)})


class EvolutionRunShape(serializers.Serializer[Any]):
    """One fan-out of an evolution's phase (control_plane.evolution.phases)."""

    phase = serializers.CharField()
    action = serializers.CharField()
    step = serializers.IntegerField()
    override = serializers.BooleanField()
    run = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    error = serializers.CharField(allow_blank=True)

    class Meta:
        ref_name = "EvolutionRun"


class EvolutionShape(serializers.Serializer[Any]):
    """An evolution as the API, the admin page and the CLI show it (phases.evolution_state)."""

    name = serializers.CharField()
    title = serializers.CharField()
    completed = serializers.CharField(allow_blank=True)
    status = serializers.CharField()
    finished = serializers.BooleanField()
    phases = serializers.ListField(child=serializers.DictField())
    switch = serializers.DictField(child=serializers.CharField())
    contract_gate = serializers.DictField()
    options = serializers.DictField()
    current = serializers.DictField(allow_null=True)
    runs = EvolutionRunShape(many=True)
    url = serializers.CharField()

    class Meta:
        ref_name = "Evolution"


EVOLUTION_LIST = inline_serializer("EvolutionList", {"results": EvolutionShape(many=True)})

RUN_DETAIL_QUERY = (
    QueryParam("status", "Only steps in this status.", enum=tuple(StepStatus.values)),
    QueryParam(
        "q", "Only steps whose schema name contains this text.", max_length=200, pattern=NO_NUL_TEXT
    ),
)


class MoveProgressShape(serializers.Serializer[Any]):
    """Where a move stands while it runs (a move copies in one transaction: its row counts come
    when it is done)."""

    elapsed_seconds = serializers.FloatField(
        help_text="Queued: since it was requested; copying: since a worker claimed it; "
        "finished: from its start to its end."
    )
    stuck = serializers.BooleanField(
        allow_null=True,
        help_text="Unfinished with no message waiting and no live worker: a retry sends it "
        "again (null: the broker did not answer).",
    )
    queue_consumed = serializers.BooleanField(
        allow_null=True,
        help_text="Queued: whether any worker consumes the moves' queue (null: not queued, "
        "or not known yet).",
    )

    class Meta:
        ref_name = "MoveProgress"


class MoveShape(serializers.Serializer[Any]):
    """A tenant's move between placements (control_plane.tenancy.move_selectors.move_state)."""

    id = serializers.IntegerField()
    tenant = serializers.CharField()
    # A declared field, which DRF takes out of the class; only mypy sees Field.source here.
    source = serializers.ChoiceField(choices=Isolation.choices)  # type: ignore[assignment]
    target = serializers.ChoiceField(choices=Isolation.choices)
    status = serializers.ChoiceField(choices=MoveStatus.choices)
    finished = serializers.BooleanField()
    error = serializers.CharField(
        allow_blank=True, help_text="Why it failed, or a note on a move that is done."
    )
    rows = serializers.DictField(
        child=serializers.IntegerField(), help_text="Rows copied by table, once done."
    )
    rows_total = serializers.IntegerField(allow_null=True)
    seconds = serializers.FloatField(allow_null=True, help_text="How long the copy took.")
    attempts = serializers.IntegerField()
    worker = serializers.CharField(allow_blank=True)
    requested_by = serializers.CharField(allow_null=True)
    requested_via = serializers.CharField()
    requested_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    progress = MoveProgressShape()
    url = serializers.CharField()

    class Meta:
        ref_name = "TenantMove"


MOVE_LIST = inline_serializer("TenantMoveList", {"results": MoveShape(many=True)})
MOVE_LIST_QUERY = (
    QueryParam("status", "Only moves in this status.", enum=tuple(MoveStatus.values)),
    QueryParam(
        "tenant",
        "Only the moves of the tenant with this slug.",
        max_length=63,
        pattern=NO_NUL_TEXT,
    ),
)
