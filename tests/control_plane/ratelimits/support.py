"""What the rate-limit tests share: their limits switched on, with keys of the test only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.test import override_settings

from control_plane.ratelimits.memo import REFUSALS


@contextmanager
def limits_of_this_test(
    unique: str, plans: Mapping[str, Mapping[str, int]], *, window: int = 60, **more: Any
) -> Iterator[None]:
    """Rate limits on with `plans` and a token share of half; keys of this test only (a fresh
    test database reuses tenant ids) and an empty refusal memo before and after. `more`: other
    RATE_LIMIT_* settings."""
    REFUSALS.clear()
    with override_settings(
        RATE_LIMIT_PLANS=plans,
        RATE_LIMITS_ENABLED=True,
        RATE_LIMIT_TOKEN_SHARE=0.5,
        RATE_LIMIT_KEY_PREFIX=f"rl-{unique}",
        RATE_LIMIT_WINDOW_SECONDS=window,
        **more,
    ):
        yield
    REFUSALS.clear()
