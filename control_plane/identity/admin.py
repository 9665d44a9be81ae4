"""Memberships and API tokens in the operators' admin.

A token's plaintext is shown once in a message and never stored; digests are never displayed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.principals import forget_principals
from control_plane.identity.tokens import new_token_secret


def token_message(label: str, token: str) -> SafeString:
    """The message that shows a new token's plaintext, the one time it is ever shown."""
    return format_html(
        '{}: <code id="new-api-token">{}</code> &mdash; shown only this once, copy it now.',
        label,
        token,
    )


# --- Memberships -----------------------------------------------------------------------------


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
    search_fields = ("user__username", "user__email", "tenant__slug", "tenant__name")
    list_select_related = ("user", "tenant")
    raw_id_fields = ("user",)


# --- API tokens ------------------------------------------------------------------------------


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "user",
        "tenant",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "tenant")
    search_fields = ("name", "prefix", "user__username", "user__email", "tenant__slug")
    list_select_related = ("user", "tenant")
    raw_id_fields = ("user",)
    actions = ("revoke",)
    add_fields = ("user", "tenant", "name", "expires_at")
    change_fields = (
        "name",
        "expires_at",
        "user",
        "tenant",
        "prefix",
        "created_at",
        "revoked_at",
        "last_used_at",
    )

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        # `digest` is in neither list: it is never displayed.
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            return ()
        return ("user", "tenant", "prefix", "created_at", "revoked_at", "last_used_at")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        secret = new_token_secret()
        obj.prefix, obj.digest = secret.prefix, secret.digest
        super().save_model(request, obj, form, change)
        self.message_user(
            request, token_message(f"API token {obj.name}", secret.value), messages.SUCCESS
        )

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        live = queryset.filter(revoked_at__isnull=True)
        digests = list(live.values_list("digest", flat=True))
        count = live.update(revoked_at=timezone.now())
        forget_principals(digests)  # update() sends no signal
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)


__all__ = ["ApiTokenAdmin", "MembershipAdmin", "token_message"]
