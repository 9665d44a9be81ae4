"""Operator API of evolutions on the public host: list, watch, start, roll back, cancel, resume.

Staff bearer tokens only; errors are problem+json through the project's one handler. Confirming
a rollback or a contract past its closed gate is a field of the body, never implied.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from control_plane.evolution import phases
from control_plane.evolution.catalog import CATALOG
from control_plane.evolution.models import PHASE_ORDER
from control_plane.fanout.api import JsonBoolean
from control_plane.http.openapi import EVOLUTION_LIST, EvolutionShape
from control_plane.tenancy.api import OpsView
from taskflow.openapi import problems
from tenants.problems import NotFound


class PhaseInputSerializer(serializers.Serializer[dict[str, Any]]):
    override = JsonBoolean(required=False, default=False, help_text="Past a closed gate.")
    confirm = JsonBoolean(required=False, default=False, help_text="Confirms the override.")


class RollbackInputSerializer(serializers.Serializer[dict[str, Any]]):
    confirm = JsonBoolean(required=False, default=False, help_text="Required: true.")


def _state(name: str) -> dict[str, Any]:
    state = phases.evolution_state(phases.get_evolution(name))
    state["url"] = f"/ops/v1/evolutions/{name}"
    return state


def _phase(phase: str) -> str:
    if phase not in PHASE_ORDER:
        raise NotFound(f"No phase {phase!r}; phases: {', '.join(PHASE_ORDER)}.")
    return phase


@extend_schema_view(
    get=extend_schema(
        operation_id="listEvolutions", summary="Evolutions", responses={200: EVOLUTION_LIST}
    )
)
class EvolutionCollection(OpsView):
    def get(self, request: Request) -> Response:
        return Response({"results": [_state(name) for name in sorted(CATALOG)]})


@extend_schema_view(
    get=extend_schema(
        operation_id="getEvolution", summary="An evolution", responses={200: EvolutionShape}
    )
)
class EvolutionDetail(OpsView):
    def get(self, request: Request, name: str) -> Response:
        return Response(_state(name))


@extend_schema_view(
    post=extend_schema(
        operation_id="startEvolutionPhase",
        summary="Start an evolution's phase (idempotent)",
        request=PhaseInputSerializer,
        responses={202: EvolutionShape, **problems(409)},
    )
)
class StartPhase(OpsView):
    def post(self, request: Request, name: str, phase: str) -> Response:
        shape = PhaseInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        user = request.user if isinstance(request.user, User) else None
        phases.start_phase(
            phases.get_evolution(name), _phase(phase), created_by=user, **shape.validated_data
        )
        return Response(_state(name), status=202)


@extend_schema_view(
    post=extend_schema(
        operation_id="rollBackEvolutionPhase",
        summary="Roll back an evolution's expand or switch (confirm: true)",
        request=RollbackInputSerializer,
        responses={202: EvolutionShape, **problems(409)},
    )
)
class RollbackPhase(OpsView):
    def post(self, request: Request, name: str, phase: str) -> Response:
        shape = RollbackInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        user = request.user if isinstance(request.user, User) else None
        phases.rollback(
            phases.get_evolution(name), _phase(phase), created_by=user, **shape.validated_data
        )
        return Response(_state(name), status=202)


@extend_schema_view(
    post=extend_schema(
        operation_id="cancelEvolution",
        summary="Cancel the running phase",
        request=None,
        responses={200: EvolutionShape, **problems(409)},
    )
)
class CancelEvolution(OpsView):
    def post(self, request: Request, name: str) -> Response:
        phases.cancel(phases.get_evolution(name))
        return Response(_state(name))


@extend_schema_view(
    post=extend_schema(
        operation_id="resumeEvolution",
        summary="Resume the stopped phase where it stopped",
        request=None,
        responses={202: EvolutionShape, **problems(409)},
    )
)
class ResumeEvolution(OpsView):
    def post(self, request: Request, name: str) -> Response:
        phases.resume(phases.get_evolution(name))
        return Response(_state(name), status=202)
