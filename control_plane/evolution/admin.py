"""Evolutions in the operators' admin: the evolution page.

The page (an Evolution's change page) shows the four phases, which are done, the running phase's
fan-out (progress bar, counts, rows written), the read switch and the contract gate with its
reasons; evolution_page.js keeps it current by polling the JSON state endpoint, the same shape
the operator API returns (control_plane.http.live_admin, shared with the run page). Its buttons
post to views that call control_plane.evolution.phases: start a phase, roll back the expand or
the switch (a confirmation checkbox), override a closed contract gate (the same), cancel, resume.
Evolutions are catalogued in code: no add or delete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse

from control_plane.evolution import phases
from control_plane.evolution.catalog import CATALOG
from control_plane.evolution.models import PHASE_ORDER, Evolution
from control_plane.http.live_admin import LivePageAdmin


@admin.register(Evolution)
class EvolutionAdmin(LivePageAdmin):
    list_display = ("name", "completed", "updated_at")
    ordering = ("name",)
    page_template = "admin/evolution/evolution/evolution_page.html"
    posted = ("act",)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        for name in CATALOG:  # every catalogued evolution has its row, and so its page
            phases.get_evolution(name)
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The evolution page, rendered once with the current state, then polled."""
        evolution = self.checked_object(request, object_id)
        state = phases.evolution_state(evolution)
        current = state["current"] or {}
        return self.live_page(
            request,
            evolution,
            title=f"Evolution {evolution.name}",
            state=state,
            evolution=evolution,
            current=current,
            percent=round(float(current.get("progress", 0)) * 100, 1),
            phases=PHASE_ORDER,
            act_url=self.url_of("act", evolution),
        )

    def object_state(self, request: HttpRequest, evolution: Evolution) -> dict[str, Any]:
        return phases.evolution_state(evolution)

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One of: start:<phase>, rollback:<phase>, cancel, resume (with `confirm` = yes)."""
        evolution = self.checked_object(request, object_id, change=True)
        action, _, phase = request.POST.get("action", "").partition(":")
        confirm = request.POST.get("confirm") == "yes"
        user = request.user if request.user.is_authenticated else None
        changes: dict[str, tuple[Callable[[], object], str]] = {
            "start": (
                lambda: phases.start_phase(
                    evolution, phase, override=confirm, confirm=confirm, created_by=user
                ),
                f"{phase} started.",
            ),
            "rollback": (
                lambda: phases.rollback(evolution, phase, confirm=confirm, created_by=user),
                f"{phase} rollback started.",
            ),
            "cancel": (
                lambda: phases.cancel(evolution),
                "Cancelled: schemas in flight finish, no new ones start.",
            ),
            "resume": (lambda: phases.resume(evolution), "Resumed."),
        }
        if action not in changes:
            raise Http404("No such action.")
        self.apply(request, *changes[action])
        return self.back_to_page(evolution)
