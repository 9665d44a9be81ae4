"""The admin's live job pages: an object's page rendered once, then kept current by polling.

A migration run's page and an evolution's page are each a change page replaced by a template
that a script keeps current from the object's state as JSON (`<id>/state/`, the same shape the
operator API returns), with buttons that post to `<id>/<action>/`. What they share is written
here once: those URLs, the object looked up with its permission checked, the page's common
context, and an action's outcome as a flash message. Jobs start elsewhere (actions, the API,
the CLI), so these pages neither add nor delete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from tenants.problems import Problem

POLL_INTERVAL_MS = 1000


class LivePageAdmin(admin.ModelAdmin):
    """A model admin whose change page is a live page: set `page_template`, name the POST
    views in `posted` (each a method `<name>_view(request, object_id)`), and say what the
    object's state is in `object_state`."""

    page_template: ClassVar[str] = ""
    posted: ClassVar[tuple[str, ...]] = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def object_state(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        """The object's state as the page's script and the operator API read it."""
        raise NotImplementedError

    def url_name(self, name: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{name}"

    def url_of(self, name: str, obj: Model) -> str:
        """The admin URL `name` (state, change, or a posted view's name) of `obj`."""
        return reverse(f"admin:{self.url_name(name)}", args=[obj.pk])

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<path:object_id>/state/",
                self.admin_site.admin_view(self.state_view),
                name=self.url_name("state"),
            ),
            *(
                path(
                    f"<path:object_id>/{name}/",
                    self.admin_site.admin_view(require_POST(getattr(self, f"{name}_view"))),
                    name=self.url_name(name),
                )
                for name in self.posted
            ),
        ]
        return [*own, *super().get_urls()]

    def checked_object(self, request: HttpRequest, object_id: str, *, change: bool = False) -> Any:
        """The page's object, or 404; 403 unless the user may view it (change it, for actions)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No such {self.model._meta.verbose_name}.")
        allowed = (
            self.has_change_permission(request, obj)
            if change
            else self.has_view_permission(request, obj)
        )
        if not allowed:
            raise PermissionDenied
        return obj

    def live_page(
        self, request: HttpRequest, obj: Model, *, title: str, state: dict[str, Any], **context: Any
    ) -> TemplateResponse:
        """The page, rendered once with the current state; its script polls `state_url`."""
        return TemplateResponse(
            request,
            self.page_template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "state": state,
                "poll_ms": POLL_INTERVAL_MS,
                "state_url": self.url_of("state", obj),
                **context,
            },
        )

    def state_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        return JsonResponse(self.object_state(request, self.checked_object(request, object_id)))

    def apply(self, request: HttpRequest, change: Callable[[], object], done: str) -> None:
        """Run one service call for a button: `done` as its success, or the refusal's detail."""
        try:
            change()
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)

    def back_to_page(self, obj: Model) -> HttpResponse:
        return HttpResponseRedirect(self.url_of("change", obj))
