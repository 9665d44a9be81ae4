"""Fan-out metrics after real runs: a worker of this test's own on the migrations queue (its
pool's metrics served by its main process) migrates tenants, then runs again as a no-op, and its
exporter counts exactly the schemas each run finished, by status."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.celery import app as celery_app
from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus
from tests.conftest import nobody_else_consumes
from tests.control_plane.observability.conftest import samples, start_metered_worker
from tests.fanout.support import wait_for_run

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("committed")]
SCHEMAS = 'taskflow_fanout_schemas_total{{status="{}"}}'


def test_fanout_metrics_count_the_schemas_of_real_runs(
    tenants_at_base, script_location: str, tmp_path: Path
) -> None:
    tenants = tenants_at_base(6)
    slugs = [t.slug for t in tenants]
    with nobody_else_consumes("migrations"):
        celery_app.control.purge()
        metered = start_metered_worker(tmp_path / "metrics", "migrations", concurrency=2)
        try:
            first = runs.start_run(
                tenants=slugs,
                to="head",
                concurrency=2,
                batch_size=2,
                script_location=script_location,
            )
            first = wait_for_run(first.pk)
            after_first = samples(metered.scrape(), "taskflow_fanout_schemas_total")
            again = runs.start_run(tenants=slugs, script_location=script_location)
            again = wait_for_run(again.pk)
            after_again = samples(metered.scrape(), "taskflow_fanout_schemas_total")
        finally:
            metered.worker.stop()
    assert first.status == RunStatus.SUCCEEDED, first.error
    assert runs.run_counts(first)["succeeded"] == 6
    assert after_first == {SCHEMAS.format("succeeded"): 6.0}
    # The second run finds every tenant at the target: six skips, nothing migrated again.
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert runs.run_counts(again)["skipped"] == 6
    assert after_again == {SCHEMAS.format("succeeded"): 6.0, SCHEMAS.format("skipped"): 6.0}
