"""The tests marked empty_shared_schema run in the default test command too: in a child pytest
on a fresh database and a private Redis (tests/empty_shared_schema.py), one test here per group
of them, failing with the child's whole output when any of its tests fails or none ran."""

from __future__ import annotations

import pytest

from tests.empty_shared_schema import (
    MARK,
    PROFILE_KEY,
    BackgroundProfile,
    ProfileRun,
    run_profile,
)

# The child starts Celery workers of its own.
pytestmark = pytest.mark.worker

GROUPS = {
    "tests/evolution/test_lanes.py": "the shared schema's backfill lanes, row by row",
    "tests/imports/test_history.py": "the shared schema's way down past 0006 and up again",
}


@pytest.fixture(scope="module")
def profile(request: pytest.FixtureRequest) -> ProfileRun:
    """One child run for the module: one fresh database and setup_platform for every group,
    started in the background when collection ended (tests/conftest.py), else now."""
    started: BackgroundProfile | None = request.config.stash.get(PROFILE_KEY, None)
    return started.result() if started is not None else run_profile("tests")


@pytest.mark.parametrize("group", GROUPS)
def test_the_group_passes_on_a_fresh_database(profile: ProfileRun, group: str) -> None:
    results = profile.of_file(group)
    assert results, f"the child ran no {MARK} test of {group}:\n{profile.output}"
    assert set(results.values()) == {"PASSED"}, f"{group}: {results}\n{profile.output}"


def test_the_child_ran_only_known_groups_and_passed(profile: ProfileRun) -> None:
    """A test newly marked empty_shared_schema gets a group here (and a README line)."""
    unknown = {node for node in profile.outcomes if node.split("::", 1)[0] not in GROUPS}
    assert not unknown, f"marked {MARK} outside GROUPS: {sorted(unknown)}"
    assert profile.returncode == 0, profile.output
