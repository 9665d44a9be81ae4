"""Operator API of evolutions on the public host: list, watch, start, roll back, cancel, resume.

Staff bearer tokens only; errors are problem+json through the project's one handler. Confirming
a rollback or a contract past its closed gate is a field of the body, never implied.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from control_plane.evolution import phases
from control_plane.evolution.catalog import CATALOG
from control_plane.evolution.models import PHASE_ORDER
from control_plane.fanout.api import JsonBoolean
from control_plane.http.openapi import EVOLUTION_LIST, EvolutionShape
from control_plane.http.ops_actions import OpsAction, action, operator
from control_plane.tenancy.api import OpsView
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


@action("startEvolutionPhase", "Start an evolution's phase (idempotent)", EvolutionShape)
class StartPhase(OpsAction):
    body = PhaseInputSerializer

    def act(self, request: Request, data: dict[str, Any], name: str, phase: str) -> Any:
        evolution = phases.get_evolution(name)
        phases.start_phase(evolution, _phase(phase), created_by=operator(request), **data)
        return _state(name)


@action(
    "rollBackEvolutionPhase",
    "Roll back an evolution's expand or switch (confirm: true)",
    EvolutionShape,
)
class RollbackPhase(OpsAction):
    body = RollbackInputSerializer

    def act(self, request: Request, data: dict[str, Any], name: str, phase: str) -> Any:
        evolution = phases.get_evolution(name)
        phases.rollback(evolution, _phase(phase), created_by=operator(request), **data)
        return _state(name)


@action("cancelEvolution", "Cancel the running phase", EvolutionShape)
class CancelEvolution(OpsAction):
    answer_status = 200

    def act(self, request: Request, data: dict[str, Any], name: str) -> Any:
        phases.cancel(phases.get_evolution(name))
        return _state(name)


@action("resumeEvolution", "Resume the stopped phase where it stopped", EvolutionShape)
class ResumeEvolution(OpsAction):
    def act(self, request: Request, data: dict[str, Any], name: str) -> Any:
        phases.resume(phases.get_evolution(name))
        return _state(name)
