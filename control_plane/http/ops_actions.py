"""Actions of the operator API: a POST that changes one job and answers the job's state.

Fan-out runs, evolutions and moves each take actions (resume, cancel, retry, start a phase, roll
one back). Every such action is one service call between the same steps: the optional body
checked by its serializer, the staff user who asked, and the job's state in the answer (202
when a worker does the rest, 200 when it is done). Those steps, and the OpenAPI description
that follows from them, are written here once; a view says only what it calls. Refusals are
the services' own problems (409 and the like), rendered by the project's one handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from control_plane.tenancy.api import OpsView
from taskflow.openapi import problems


def operator(request: Request) -> User | None:
    """The staff user behind the request, as services record who started something."""
    return request.user if isinstance(request.user, User) else None


class OpsAction(OpsView):
    """POST: check the body against `body` (none: no body), `act`, answer the state it returns."""

    body: ClassVar[type[serializers.Serializer[Any]] | None] = None
    answer_status: ClassVar[int] = 202
    # Each action's own: act(request, data, **the URL's arguments) calls the service with the
    # checked body and returns the job's state.
    act: Callable[..., Any]

    def body_of(self, request: Request) -> Any:
        """What `body` checks: the request's data (a view may read an optional body its way)."""
        return request.data

    def post(self, request: Request, **kwargs: Any) -> Response:
        data: dict[str, Any] = {}
        if self.body is not None:
            shape = self.body(data=self.body_of(request))
            shape.is_valid(raise_exception=True)
            data = dict(shape.validated_data)
        return Response(self.act(request, data, **kwargs), status=self.answer_status)


def action(
    operation_id: str, summary: str, shape: Any, *, description: str | None = None
) -> Callable[[type[OpsAction]], type[OpsAction]]:
    """An action's OpenAPI description, from the view itself: its body, its answer's status
    and shape, and the 409 of a job whose state refuses the action."""

    def describe(view: type[OpsAction]) -> type[OpsAction]:
        schema = extend_schema(
            operation_id=operation_id,
            summary=summary,
            description=description,
            request=view.body,
            responses={view.answer_status: shape, **problems(409)},
        )
        described: type[OpsAction] = extend_schema_view(post=schema)(view)
        return described

    return describe
