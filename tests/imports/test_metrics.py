"""Import metrics after real imports: a worker of this test's own (its pool's metrics served by
its main process) runs two imports, and its exporter's values are the jobs' own counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import nobody_else_consumes
from tests.control_plane.observability.conftest import samples, start_metered_worker
from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker

BAD = [
    ("BAD-1", "P1", "bad status", "", "doing", "", "", ""),
    ("BAD-2", "NOPE", "no such project", "", "", "", "", ""),
]


def test_import_metrics_count_the_rows_rejects_and_jobs_of_real_imports(
    schema_tenant: ImportTenant, tmp_path: Path
) -> None:
    with nobody_else_consumes("imports"):  # the session's worker would take the messages
        metered = start_metered_worker(tmp_path / "metrics", "imports", concurrency=2)
        try:
            skipped = schema_tenant.import_and_wait(
                csv_bytes([*generated_rows(6, "P1"), *BAD]), mode="skip-invalid"
            )
            refused = schema_tenant.import_and_wait(
                csv_bytes([*generated_rows(3, "P1", prefix="ALL"), *BAD])
            )
            text = metered.scrape()
        finally:
            metered.worker.stop()
    assert (skipped["status"], skipped["rows_read"], skipped["rejected"]) == ("succeeded", 8, 2)
    assert (refused["status"], refused["rows_read"], refused["rejected"]) == ("failed", 5, 2)
    assert samples(text, "taskflow_import_jobs_total") == {
        'taskflow_import_jobs_total{status="succeeded"}': 1.0,
        'taskflow_import_jobs_total{status="failed"}': 1.0,
    }
    assert samples(text, "taskflow_import_rows_total") == {"taskflow_import_rows_total": 13.0}
    assert samples(text, "taskflow_import_rejected_rows_total") == {
        "taskflow_import_rejected_rows_total": 4.0
    }
    # Each phase an import went through was counted in and out again: none is running now.
    phases = samples(text, "taskflow_import_jobs_in_phase")
    assert phases, text
    assert set(phases.values()) == {0.0}
