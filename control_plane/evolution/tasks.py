"""Celery tasks of evolutions: thin, they call control_plane.evolution.phases."""

from __future__ import annotations

from celery import shared_task

from control_plane.evolution import phases


@shared_task(name="control_plane.evolution.settle_evolutions")
def settle_evolutions() -> list[str]:
    """Beat, every few seconds: act on finished phase runs nobody is watching."""
    return phases.settle_all()
