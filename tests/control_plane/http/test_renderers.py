"""The API's orjson renderer writes what DRF's JSONRenderer writes, for every type the API sends."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer

from control_plane.http.renderers import FastJSONRenderer

PAYLOAD = {
    "id": 2**62,
    "title": 'Prüfung — 完了 "quoted" \n',
    "due_date": date(2026, 11, 30),
    "at_utc": datetime(2026, 11, 22, 4, 30, 1, 123456, tzinfo=UTC),
    "at_plus_one": datetime(2026, 11, 22, 5, 30, tzinfo=timezone(timedelta(hours=1))),
    "naive": datetime(2026, 11, 22, 4, 30),
    "ratio": Decimal("0.25"),
    "lazy": gettext_lazy("This field is required."),
    "errors": [ErrorDetail("Unknown field.", code="invalid")],
    "token_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"none": None, "flag": True, "list": [1, 2.5, "x"]},
}


def test_renders_what_drf_renders() -> None:
    ours = FastJSONRenderer().render(PAYLOAD)
    drf = JSONRenderer().render(PAYLOAD)
    assert json.loads(ours) == json.loads(drf)
    assert b'"at_utc":"2026-11-22T04:30:01.123456Z"' in ours  # UTC as DRF writes it


def test_keys_that_are_not_strings_are_written_as_drf_writes_them() -> None:
    payload = {"counts": {1: "one", 2.5: "half", False: "no", None: "none"}, "list": [{7: 7}]}
    ours = FastJSONRenderer().render(payload)
    assert json.loads(ours) == json.loads(JSONRenderer().render(payload))
    assert b'"1":"one"' in ours


def test_a_type_neither_encoder_knows_is_refused_as_before() -> None:
    with pytest.raises(TypeError):
        FastJSONRenderer().render({"x": object()})
    with pytest.raises(TypeError):
        FastJSONRenderer().render({1: object()})


def test_no_body_for_none() -> None:
    assert FastJSONRenderer().render(None) == b""
