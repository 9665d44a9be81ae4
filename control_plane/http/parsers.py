"""The API's JSON parser: DRF's, with a document nested too deep refused as malformed.

The standard library's decoder recurses once per level: a body of a few thousand `[` raises
RecursionError, which DRF's parser does not catch (a 500). Such a body is not JSON any client
sends; it is a 400 like any other parse error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc
