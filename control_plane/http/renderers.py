"""The API's JSON renderer: DRF's output, written by orjson.

Rendering a page of 50 tasks with DRF's JSONRenderer (the standard library encoder plus DRF's
Python `default`) cost about half a millisecond of a 6 ms list request here; orjson writes the
same JSON in a fraction of that. Types orjson does not know (lazy translations, Decimal, ...) go
through DRF's own encoder, and UTC datetimes end in "Z" as DRF writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer

_FALLBACK = JSONRenderer.encoder_class().default  # DRF's own encoder, for the types orjson lacks
_OPTIONS = orjson.OPT_UTC_Z
# DRF writes a key that is not a string (an int, a bool, None) as one: orjson does only with
# OPT_NON_STR_KEYS, which takes another, slower path for every dict (about 1.7x the time of a
# page of tasks). Bodies are rendered without it first, and again with it when a key refuses.
_ANY_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS


class FastJSONRenderer(JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        try:
            return orjson.dumps(data, default=_FALLBACK, option=_OPTIONS)
        except orjson.JSONEncodeError:  # a key that is not a string (or what fails either way)
            return orjson.dumps(data, default=_FALLBACK, option=_ANY_KEYS)
