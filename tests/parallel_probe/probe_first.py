"""Run only by tests/test_parallel.py, in a child pytest over two xdist workers."""

import pytest

from tests.parallel_probe.report import report


@pytest.mark.django_db
def test_report() -> None:
    report()
