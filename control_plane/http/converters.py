"""The path converter of row ids: what `<id:...>` in a URL pattern accepts.

Ids are PostgreSQL bigints. Django's `int` converter passes any run of digits to the view, and
an id past 2^63-1 then fails in the database (NumericValueOutOfRange, a 500): this one makes such
a path match nothing (404) before any query. Registered once, by the control plane's app config;
drf-spectacular describes it by SCHEMA (settings' PATH_CONVERTER_OVERRIDES).
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # PostgreSQL's bigint
NAME = "id"
# How the OpenAPI document describes an `<id:...>` parameter.
SCHEMA = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}


class IdConverter:
    regex = "[0-9]+"

    def to_python(self, value: str) -> int:
        """The id, or ValueError (the pattern does not match) outside 1..MAX_ID."""
        number = int(value)  # thousands of digits: ValueError too
        if not 1 <= number <= MAX_ID:
            raise ValueError(f"{value} is not an id")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


def register() -> None:
    # Imported here: settings read SCHEMA from this module before Django is set up.
    from django.urls import register_converter

    register_converter(IdConverter, NAME)
