"""Markers for the engine a test needs: `citus` tests run only against a Citus cluster
(CITUS_TESTS=1, which `platform/dev.sh citus` sets), `postgresql_only` tests only off it.

The default test command runs on plain PostgreSQL, where the `citus` tests cannot pass, so they
are deselected there (reported as deselected, never as passed or skipped); a `postgresql_only`
test states what plain PostgreSQL does where Citus does otherwise, and is deselected from the
Citus run. Deselected here rather than in pyproject's addopts so that a `-m` given on the
command line (which replaces the one in addopts) cannot pull them into the wrong run.
"""

from __future__ import annotations

import os

import pytest

MARK = "citus"
OFF_CITUS_MARK = "postgresql_only"
ENVIRONMENT = "CITUS_TESTS"


def citus_tests_enabled() -> bool:
    """True when this run is against a Citus cluster (`platform/dev.sh citus`)."""
    return os.environ.get(ENVIRONMENT, "") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests marked `citus` unless CITUS_TESTS=1, those marked `postgresql_only`
    when it is."""
    unwanted = OFF_CITUS_MARK if citus_tests_enabled() else MARK
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        (deselected if item.get_closest_marker(unwanted) else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
