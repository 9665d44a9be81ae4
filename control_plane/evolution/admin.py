"""Evolutions in the operators' admin: the evolution page.

The page (an Evolution's change page) shows the four phases, which are done, the running phase's
fan-out (progress bar, counts, rows written), the read switch and the contract gate with its
reasons; evolution_page.js keeps it current by polling the JSON state endpoint, the same shape
the operator API returns. Its buttons post to views that call control_plane.evolution.phases:
start a phase, roll back the expand or the switch (a confirmation checkbox), override a closed
contract gate (the same), cancel, resume. Evolutions are catalogued in code: no add or delete.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from control_plane.evolution import phases
from control_plane.evolution.catalog import CATALOG
from control_plane.evolution.models import PHASE_ORDER, Evolution
from tenants.problems import Problem

POLL_INTERVAL_MS = 1000


@admin.register(Evolution)
class EvolutionAdmin(admin.ModelAdmin):
    list_display = ("name", "completed", "updated_at")
    ordering = ("name",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Evolution | None = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        for name in CATALOG:  # every catalogued evolution has its row, and so its page
            phases.get_evolution(name)
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<path:object_id>/state/",
                self.admin_site.admin_view(self.state_view),
                name="evolution_evolution_state",
            ),
            path(
                "<path:object_id>/act/",
                self.admin_site.admin_view(require_POST(self.act_view)),
                name="evolution_evolution_act",
            ),
        ]
        return [*own, *super().get_urls()]

    def _evolution(
        self, request: HttpRequest, object_id: str, *, change: bool = False
    ) -> Evolution:
        evolution = self.get_object(request, unquote(object_id))
        if evolution is None:
            raise Http404("No such evolution.")
        allowed = (
            self.has_change_permission(request, evolution)
            if change
            else self.has_view_permission(request, evolution)
        )
        if not allowed:
            raise PermissionDenied
        return evolution

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The evolution page, rendered once with the current state, then polled."""
        evolution = self._evolution(request, object_id)
        state = phases.evolution_state(evolution)
        current = state["current"] or {}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Evolution {evolution.name}",
            "evolution": evolution,
            "state": state,
            "current": current,
            "percent": round(float(current.get("progress", 0)) * 100, 1),
            "phases": PHASE_ORDER,
            "poll_ms": POLL_INTERVAL_MS,
            "state_url": reverse("admin:evolution_evolution_state", args=[evolution.pk]),
            "act_url": reverse("admin:evolution_evolution_act", args=[evolution.pk]),
        }
        return TemplateResponse(request, "admin/evolution/evolution/evolution_page.html", context)

    def state_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        return JsonResponse(phases.evolution_state(self._evolution(request, object_id)))

    def act_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One of: start:<phase>, rollback:<phase>, cancel, resume (with `confirm` = yes)."""
        evolution = self._evolution(request, object_id, change=True)
        action, _, phase = request.POST.get("action", "").partition(":")
        confirm = request.POST.get("confirm") == "yes"
        user = request.user if request.user.is_authenticated else None
        try:
            if action == "start":
                phases.start_phase(
                    evolution,
                    phase,
                    override=confirm,
                    confirm=confirm,
                    created_by=user,
                )
                done = f"{phase} started."
            elif action == "rollback":
                phases.rollback(evolution, phase, confirm=confirm, created_by=user)
                done = f"{phase} rollback started."
            elif action == "cancel":
                phases.cancel(evolution)
                done = "Cancelled: schemas in flight finish, no new ones start."
            elif action == "resume":
                phases.resume(evolution)
                done = "Resumed."
            else:
                raise Http404("No such action.")
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(
            reverse("admin:evolution_evolution_change", args=[evolution.pk])
        )
