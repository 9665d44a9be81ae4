"""Moves in the operators' admin: the list of recorded moves, and a tenant's own moves.

Read-only: moves are requested by TenantAdmin's actions or `manage.py move_tenant` and change
only by running (control_plane.tenancy.moves). Pages showing a move that is still queued or
copying reload themselves (live_refresh.js) until it ends.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from control_plane.http.live_refresh import live_marker
from control_plane.tenancy.models import TenantMove
from tenants.models import Tenant

RECENT_MOVES = 5


def move_badge(move: TenantMove) -> SafeString:
    return format_html(
        '<span class="move-status move-status--{}">{}</span>{}',
        move.status,
        move.status,
        live_marker(not move.is_finished),
    )


def rows_moved(move: TenantMove) -> str:
    return f"{sum(move.rows.values()):,}" if move.rows else "-"


def moves_panel(tenant: Tenant) -> SafeString:
    """A tenant's recent moves for its change page, newest first, each linking to its record."""
    moves = list(
        TenantMove.objects.filter(tenant=tenant).select_related("requested_by")[:RECENT_MOVES]
    )
    if not moves:
        return SafeString("none")
    rows = format_html_join(
        "",
        '<tr><td><a href="{}">{}</a></td><td>{} &rarr; {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
        (
            (
                reverse("admin:control_plane_tenantmove_change", args=[m.pk]),
                m.pk,
                m.source,
                m.target,
                move_badge(m),
                rows_moved(m),
                requester(m),
                m.error or "",
            )
            for m in moves
        ),
    )
    return format_html(
        '<table id="tenant-moves"><thead><tr><th>Move</th><th>Placement</th><th>Status</th>'
        "<th>Rows</th><th>Requested by</th><th>Reason</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


def requester(move: TenantMove) -> str:
    """Who asked for the move: the operator, or the CLI when nobody signed in did."""
    return str(move.requested_by) if move.requested_by else move.requested_via


@admin.register(TenantMove)
class TenantMoveAdmin(admin.ModelAdmin):
    list_display = (
        "id", "tenant", "source", "target", "status_badge", "rows_display", "seconds",
        "requested_by_display", "requested_at", "finished_at", "error",
    )  # fmt: skip
    list_filter = ("status", "target")
    search_fields = ("tenant__slug",)
    list_select_related = ("tenant", "requested_by")
    ordering = ("-requested_at",)
    fields = (
        "tenant", "source", "target", "status_badge", "error", "rows_display", "seconds",
        "attempts", "worker", "requested_by_display", "requested_at", "started_at", "finished_at",
    )  # fmt: skip
    readonly_fields = fields

    class Media:
        css = {"all": ("control_plane/tenant_status.css",)}
        js = ("control_plane/live_refresh.js",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TenantMove]:
        return super().get_queryset(request).select_related("tenant", "requested_by")

    @admin.display(description="status", ordering="status")
    def status_badge(self, move: TenantMove) -> SafeString:
        return move_badge(move)

    @admin.display(description="rows")
    def rows_display(self, move: TenantMove) -> str:
        return rows_moved(move)

    @admin.display(description="requested by")
    def requested_by_display(self, move: TenantMove) -> str:
        return requester(move)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
