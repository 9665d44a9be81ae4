"""The view that serves an API's OpenAPI document: drf-spectacular's, made safe for threads and
generated once per process.

drf-spectacular generates the document on every request, inside `patched_settings`, which swaps
its process-wide settings for the view's `custom_settings` for the time of the request. Under a
threaded server (gunicorn gthread) two requests at once interleave those swaps, and its first
generation in a process resolves optional extensions lazily, which fails for the second thread
with AttributeError (a 500; seen when two clients loaded the tenant and the operator document at
the same moment). The document depends only on the code, the view, the API version asked for and
the language, so each is generated once, under one lock, and kept for the process's life.
"""

from __future__ import annotations

import threading
from typing import Any

from django.utils import translation
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SCHEMA_KWARGS, SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response

_GENERATION = threading.Lock()
_DOCUMENTS: dict[tuple[str, ...], Any] = {}


class DescriptionView(SpectacularAPIView):
    """SpectacularAPIView whose documents are generated one at a time and then reused."""

    @extend_schema(**SCHEMA_KWARGS)  # the document describes this view as drf-spectacular's
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The whole of drf-spectacular's request (its settings swap included) under the lock;
        # rendering the document to JSON or YAML happens after it, in parallel.
        with _GENERATION:
            response: Response = super().get(request, *args, **kwargs)
        return response

    def _get_schema_response(self, request: Request) -> Response:
        version = self.api_version or request.version or self._get_version_parameter(request)
        match = request.resolver_match
        key = (
            str(getattr(request, "urlconf", "") or ""),
            match.view_name if match else request.path_info,
            str(version or ""),
            str(translation.get_language() or ""),
        )
        document = _DOCUMENTS.get(key)
        if document is None:
            generator = self.generator_class(
                urlconf=self.urlconf, api_version=version, patterns=self.patterns
            )
            document = _DOCUMENTS[key] = generator.get_schema(
                request=request, public=self.serve_public
            )
        filename = self._get_filename(request, version)
        return Response(
            data=document, headers={"Content-Disposition": f'inline; filename="{filename}"'}
        )
