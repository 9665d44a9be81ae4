"""The platform's Redis cache: values read by the packed-command path decode as get() does
(real Redis)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.cache import caches

from control_plane.http.redis_cache import PooledClientRedisCache

VALUES: list[Any] = [
    0,
    -7,
    2**70,
    "text",
    b"\x80bytes",
    {"tenant": 3, "fields": ["a", None]},
    dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    None,
    True,
    1.5,
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
def test_loads_of_a_stored_value_is_what_get_returns(value: Any) -> None:
    backend = caches["default"]
    assert isinstance(backend, PooledClientRedisCache)
    backend.set("loads-check", value, 30)
    raw = backend.client().get(backend.make_key("loads-check"))
    assert raw is not None
    assert backend.loads(raw) == value == backend.get("loads-check")
    assert type(backend.loads(raw)) is type(value)
