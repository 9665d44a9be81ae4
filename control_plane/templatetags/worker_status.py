"""`{% unconsumed_queues as queues %}`: the admin's note about queues no worker consumes
(control_plane.worker.readiness, cached; the first page view after a start may wait for it)."""

from __future__ import annotations

from django import template

from control_plane.worker.readiness import unconsumed_queues as _unconsumed

register = template.Library()


@register.simple_tag
def unconsumed_queues() -> list[str] | None:
    return _unconsumed(wait=True)
