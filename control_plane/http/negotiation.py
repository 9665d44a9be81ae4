"""Content negotiation that answers the API's usual request without parsing its Accept header.

Nearly every API request sends no Accept header, `*/*` or `application/json`, and a view's first
renderer is JSON (control_plane.http.renderers). DRF's negotiation parses the header into media
types and ranks them on every request, and again for an error response; for those three values
its answer is known beforehand: the first renderer and its own media type. Anything else (other
media types, parameters, q-values, `?format=`, a format suffix) goes to DRF's negotiation
unchanged, so which renderer answers, and every 406, stay DRF's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

_ANY = (None, "*/*")
_JSON = "application/json"


class FastContentNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        if isinstance(renderers, Sequence) and renderers and not format_suffix:
            first = renderers[0]
            accept = request.META.get("HTTP_ACCEPT")
            if (accept in _ANY or (accept == _JSON and first.media_type == _JSON)) and (
                self.settings.URL_FORMAT_OVERRIDE not in request._request.GET
            ):
                return first, first.media_type
        chosen: tuple[BaseRenderer, str] = super().select_renderer(
            request, renderers, format_suffix
        )
        return chosen
