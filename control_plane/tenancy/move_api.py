"""Operator API of tenant moves on the public host: list, watch, start, retry a stuck one.

Staff bearer tokens only; errors are problem+json through the project's one handler. Moves are
requested and retried by control_plane.tenancy.moves (the services the admin and the CLI use)
and read through control_plane.tenancy.move_selectors.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from control_plane.fanout.api import named
from control_plane.http.openapi import MOVE_LIST, MOVE_LIST_QUERY, MoveShape
from control_plane.http.ops_actions import OpsAction, action, operator
from control_plane.tenancy import moves
from control_plane.tenancy.api import OpsView
from control_plane.tenancy.models import MoveStatus
from control_plane.tenancy.move_selectors import move_list, move_of, move_state, move_url
from taskflow.openapi import LOCATION_HEADER, problems
from tenants.models import Isolation, Tenant
from tenants.moving import MoveRefused
from tenants.problems import Problem


class MoveInputSerializer(serializers.Serializer[dict[str, Any]]):
    tenant = named(63, help_text="The slug of the tenant to move.")
    to = serializers.ChoiceField(choices=Isolation.choices, help_text="The placement to move to.")


class UnknownTenant(Problem):
    """A well-formed body naming no tenant (422, as an unknown revision or project is)."""

    status = 422
    title = "Unknown tenant"


def _tenant(slug: str) -> Tenant:
    tenant = Tenant.objects.exclude(schema_name="public").filter(slug=slug).first()
    if tenant is None:
        raise UnknownTenant(
            f"No tenant {slug!r}.", errors=[{"field": "tenant", "message": "No such tenant."}]
        )
    return tenant


@extend_schema_view(
    get=extend_schema(
        operation_id="listMoves",
        summary="Recent tenant moves, newest first",
        responses={200: MOVE_LIST},
    ),
    post=extend_schema(
        operation_id="startMove",
        summary="Move a tenant to another placement (a worker copies it)",
        description="A move the tenant's state refuses (an archived tenant, the placement it "
        "already has) is recorded failed with the reason and answered 409 naming it (`move`); "
        "a tenant already being moved is 409 too.",
        request=MoveInputSerializer,
        parameters=[LOCATION_HEADER],
        responses={202: MoveShape, **problems(409, 422)},
    ),
)
class MoveCollection(OpsView):
    query_parameters = {"get": MOVE_LIST_QUERY}

    def get(self, request: Request) -> Response:
        found = move_list(
            status=request.query_params.get("status", ""),
            tenant=request.query_params.get("tenant", ""),
        )
        return Response({"results": [move_state(move) for move in found]})

    def post(self, request: Request) -> Response:
        shape = MoveInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        tenant = _tenant(shape.validated_data["tenant"])
        to = shape.validated_data["to"]
        move = moves.request_move(tenant, to, requested_by=operator(request), via="api")
        if move.status == MoveStatus.FAILED:
            raise MoveRefused(move.error, move=move_url(move))
        return Response(
            move_state(move_of(move.pk)), status=202, headers={"Location": move_url(move)}
        )


@extend_schema_view(
    get=extend_schema(operation_id="getMove", summary="A tenant move", responses={200: MoveShape})
)
class MoveDetail(OpsView):
    def get(self, request: Request, move_id: int) -> Response:
        return Response(move_state(move_of(move_id)))


@action("retryMove", "Retry a stuck move (no message waiting, no live worker)", MoveShape)
class RetryMove(OpsAction):
    def act(self, request: Request, data: dict[str, Any], move_id: int) -> Any:
        return move_state(moves.retry_move(move_of(move_id)))
