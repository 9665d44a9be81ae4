"""The import's transaction-local settings (taskflow.imports.pipeline.SETTINGS): in force while
the rows and their history are written, gone from the pooled connection afterwards."""

from __future__ import annotations

from pathlib import Path

from taskflow.imports import pipeline, staging
from tenants.binding import binding_for, tenant_session
from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

SEEN = "SELECT current_setting('jit'), current_setting('work_mem')"


def test_the_write_runs_without_jit_and_with_its_work_mem_then_the_session_has_neither(
    schema_tenant: ImportTenant, tmp_path: Path
) -> None:
    source = tmp_path / "tasks.csv"
    source.write_bytes(csv_bytes(generated_rows(20, schema_tenant.project)))
    binding = binding_for(schema_tenant.fixture.tenant)
    during: list[tuple[str, str]] = []
    with tenant_session(binding) as session:
        pg = staging.driver_connection(session)
        before = pg.execute(SEEN).fetchone()

        def progress(step: pipeline.ImportProgress) -> None:
            if step.phase == pipeline.Phase.WRITING:
                row = pg.execute(SEEN).fetchone()
                assert row is not None
                during.append((row[0], row[1]))

        outcome = pipeline.run_import(
            session=session,
            schema=binding.schema,
            tenant_id=binding.tenant_id,
            source=source,
            mode=pipeline.ImportMode.ALL_OR_NOTHING,
            progress=progress,
        )
    assert outcome.inserted == 20
    assert during
    assert set(during) == {("off", "64MB")}
    # SET LOCAL: the connection, back in the pool, has its settings of before the import.
    after = pg.execute(SEEN).fetchone()
    pg.rollback()
    assert after == before != ("off", "64MB")
