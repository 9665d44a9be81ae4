"""Fixtures of the migrator and fan-out tests (a pytest plugin of tests/conftest.py): test
script directories and throw-away tenants cloned from the template at BASE_REVISION."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tenants.models import Tenant
from tests.migrations_sqla.support import (
    BASE_REVISION,
    drop_tenants,
    make_script_dir,
    make_tenants,
    set_template,
)


@pytest.fixture(scope="session")
def script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """migrations_sqla's versions plus TEST_REVISION (nullable column + index)."""
    return make_script_dir(tmp_path_factory.mktemp("scripts"))


@pytest.fixture(scope="session")
def concurrent_script_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Up to TEST_REVISION_2, whose index is built CONCURRENTLY outside the transaction."""
    return make_script_dir(tmp_path_factory.mktemp("concurrent_scripts"), with_second=True)


@pytest.fixture
def tenants_at_base(
    django_db_blocker: Any, unique: str, script_location: str
) -> Iterator[Callable[[int], list[Tenant]]]:
    """Makes committed tenants cloned from the template at BASE_REVISION; drops them afterwards."""
    prefix = f"f{unique[:8]}"
    with django_db_blocker.unblock():
        set_template(script_location, BASE_REVISION)

    def make(count: int) -> list[Tenant]:
        with django_db_blocker.unblock():
            return make_tenants(prefix, count)

    yield make
    with django_db_blocker.unblock():
        drop_tenants(prefix)
        set_template(script_location, BASE_REVISION)
