"""The fast content negotiation answers exactly as DRF's own does, for every Accept header."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from control_plane.http.negotiation import FastContentNegotiation
from control_plane.http.renderers import FastJSONRenderer


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"


ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "",
    "text/csv",
    "text/html",
    "application/json; indent=4",
    "application/json;q=0.5, text/csv",
    "application/*",
    "image/png",
]
RENDERER_SETS: list[list[BaseRenderer]] = [
    [FastJSONRenderer()],
    [FastJSONRenderer(), BrowsableAPIRenderer()],
    [CsvRenderer(), FastJSONRenderer()],
    [JSONRenderer(), CsvRenderer()],
]


def answer(
    negotiation: DefaultContentNegotiation, request: Request, renderers: list[BaseRenderer]
) -> object:
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except NotAcceptable:
        return "406"
    except Http404:  # ?format= naming no renderer
        return "404"
    return (type(renderer), media_type)


@pytest.mark.parametrize("query", ["", "?format=csv", "?format=json"])
@pytest.mark.parametrize("accept", ACCEPTS)
def test_it_answers_as_drf_does(accept: str | None, query: str) -> None:
    headers: dict[str, Any] = {} if accept is None else {"HTTP_ACCEPT": accept}
    for renderers in RENDERER_SETS:
        request = Request(APIRequestFactory().get(f"/api/v1/tasks{query}", **headers))
        fast = answer(FastContentNegotiation(), request, renderers)
        assert fast == answer(DefaultContentNegotiation(), request, renderers), (accept, renderers)


def test_it_is_the_api_default(settings) -> None:
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_CONTENT_NEGOTIATION_CLASS is FastContentNegotiation
