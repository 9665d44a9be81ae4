"""Operator API routes of evolutions, mounted under /ops/v1/ on the public host."""

from django.urls import URLPattern, path

from control_plane.evolution import api

urlpatterns: list[URLPattern] = [
    path("evolutions", api.EvolutionCollection.as_view(), name="ops-evolutions"),
    path("evolutions/<slug:name>", api.EvolutionDetail.as_view(), name="ops-evolution"),
    path(
        "evolutions/<slug:name>/phases/<slug:phase>",
        api.StartPhase.as_view(),
        name="ops-evolution-phase",
    ),
    path(
        "evolutions/<slug:name>/phases/<slug:phase>/rollback",
        api.RollbackPhase.as_view(),
        name="ops-evolution-phase-rollback",
    ),
    path(
        "evolutions/<slug:name>/cancel", api.CancelEvolution.as_view(), name="ops-evolution-cancel"
    ),
    path(
        "evolutions/<slug:name>/resume", api.ResumeEvolution.as_view(), name="ops-evolution-resume"
    ),
]
