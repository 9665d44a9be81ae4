"""The backfill batch of an evolution in the shared schema: each batch binds its tenant with
SET LOCAL, so on a Citus cluster, where shared.tasks is distributed by tenant_id and only SET
commands reach the worker holding a tenant's shard, the batch sees and fills the tenant's rows
(with set_config it saw none there, wrote nothing and reported success). Runs on both engines:
`platform/dev.sh citus` distributes the shared tables first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import sql

from migrations_sqla import scripts
from migrations_sqla.backfill import Backfill, Options, SchemaBackfiller, plan_lanes
from migrations_sqla.migrator import Result, owner_engine
from tenants.citus import is_citus
from tenants.database_roles import owner_connection
from tenants.distribution import shared_tables_distributed
from tenants.local_settings import bind_tenant
from tenants.models import Tenant
from tenants.placement import SHARED_SCHEMA
from tests.citus import citus_tests_enabled
from tests.evolution.support import make_rls_tenants
from tests.migrations_sqla.support import drop_tenants

pytestmark = pytest.mark.usefixtures("committed")

# A backfill that changes no column of the table's shape: every task's description filled.
FILL = Backfill(
    table="tasks",
    assign="description = 'filled ' || tasks.id",
    pending="description IS DISTINCT FROM 'filled ' || tasks.id",
)
TASKS = {0: 7, 1: 5}  # tenant index -> tasks written


@pytest.fixture
def rls_tenants(unique: str) -> Iterator[list[Tenant]]:
    prefix = f"bf{unique[:6]}"
    tenants = make_rls_tenants(prefix, len(TASKS))
    try:
        with owner_connection(autocommit=True) as conn:
            for index, tenant in enumerate(tenants):
                with conn.transaction():
                    conn.execute(bind_tenant(tenant.pk))
                    project = conn.execute(
                        sql.SQL("INSERT INTO {}.projects (tenant_id, key, name)"
                                " VALUES (%s, 'B', 'b') RETURNING id").format(
                            sql.Identifier(SHARED_SCHEMA)
                        ),
                        (tenant.pk,),
                    ).fetchone()  # fmt: skip
                    assert project is not None
                    # VALUES, not INSERT ... SELECT: Citus runs the latter as a COPY into the
                    # shards, which it refuses under row-level security.
                    conn.cursor().executemany(
                        sql.SQL(
                            "INSERT INTO {}.tasks (tenant_id, project_id, title) VALUES (%s, %s, %s)"
                        ).format(sql.Identifier(SHARED_SCHEMA)),
                        [(tenant.pk, project[0], f"t{n}") for n in range(TASKS[index])],
                    )
        yield tenants
    finally:
        drop_tenants(prefix)


def filled_and_history(tenant: Tenant) -> tuple[int, int, int]:
    """(tasks, tasks filled, history entries) of the tenant, read with it bound."""
    with owner_connection(autocommit=True) as conn, conn.transaction():
        conn.execute(bind_tenant(tenant.pk))
        row = conn.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {s}.tasks WHERE tenant_id = %(t)s),"
                " (SELECT count(*) FROM {s}.tasks WHERE tenant_id = %(t)s"
                "  AND description = 'filled ' || id),"
                " (SELECT count(*) FROM {s}.tasks_history WHERE tenant_id = %(t)s)"
            ).format(s=sql.Identifier(SHARED_SCHEMA)),
            {"t": tenant.pk},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_the_backfill_fills_every_rls_tenants_rows_in_batches_without_history(
    rls_tenants: list[Tenant],
) -> None:
    ids = [t.pk for t in rls_tenants]
    history_before = [filled_and_history(t)[2] for t in rls_tenants]
    reports: list[dict] = []
    with owner_engine().connect() as connection:
        backfiller = SchemaBackfiller(
            connection,
            FILL,
            tenant_ids=lambda _schema: ids,
            options=Options(batch_rows=3),
            progress=lambda _name, state: reports.append(state),
        )
        lanes = plan_lanes(backfiller.raw, SHARED_SCHEMA, FILL, ids, lanes=2, min_rows=1)
        outcome = backfiller.migrate(SHARED_SCHEMA)
        written = reports[-1]["rows"]
        again = backfiller.migrate(SHARED_SCHEMA)
        distributed = is_citus(backfiller.raw) and "tasks" in shared_tables_distributed(
            backfiller.raw
        )
    assert outcome.error == ""
    assert outcome.result == Result.MIGRATED
    assert written == sum(TASKS.values())
    assert again.result == Result.SKIPPED
    for index, tenant in enumerate(rls_tenants):
        assert filled_and_history(tenant) == (TASKS[index], TASKS[index], history_before[index])
    # The lanes were counted per tenant, bound: two lanes, the cut inside the tenants' rows.
    assert len(lanes) == 2
    cut = lanes[0]["to"]
    assert cut is not None
    assert cut[0] in ids
    assert distributed == citus_tests_enabled()


def test_a_compiled_plans_app_set_config_runs_as_set_local_on_citus() -> None:
    """On Citus the migrator runs a compiled plan one statement per query, each through
    as_set_local: a revision's `set_config('app.copying_tenant', 'on', true)` (0007_due_at_contract's
    downgrade) must become a SET LOCAL, or the history on the workers' shards would not stand
    down; every other statement goes as it was."""
    plan = scripts.plan("", "0007c", "0007d")
    statements = [scripts.as_set_local(s) for s in scripts.split_statements(plan.sql)]
    assert "SET LOCAL app.copying_tenant = 'on'" in statements
    assert "SET LOCAL app.copying_tenant = ''" in statements
    assert not [s for s in statements if "set_config('app." in s]
    for untouched in (
        "SELECT set_config('lock_timeout', '5s', true)",
        "SELECT set_config('app.tenant_id', '1', false)",
        "SELECT set_config('app.other', 'x', true)",
        "UPDATE tasks SET title = 'SELECT set_config(''app.tenant_id'', ''1'', true)'",
    ):
        assert scripts.as_set_local(untouched) == untouched


@pytest.mark.postgresql_only  # on Citus the setting is the coordinator's; rows are the workers'
def test_a_batch_commits_without_waiting_for_its_wal_flush(rls_tenants: list[Tenant]) -> None:
    """Batches run with synchronous_commit off: they hold their rows' locks (which the API's
    writes of those rows wait for) no longer than their work, and add no WAL flush of their own
    to the disk the API's commits wait on. What each row was written under, it records."""
    ids = [t.pk for t in rls_tenants]
    recorded = Backfill(
        table="tasks",
        assign="description = current_setting('synchronous_commit')",
        pending="description IS DISTINCT FROM current_setting('synchronous_commit')",
    )
    with owner_engine().connect() as connection:
        backfiller = SchemaBackfiller(
            connection, recorded, tenant_ids=lambda _schema: ids, options=Options(batch_rows=3)
        )
        outcome = backfiller.migrate(SHARED_SCHEMA)
        setting = backfiller.raw.execute("SHOW synchronous_commit").fetchone()
    assert outcome.result == Result.MIGRATED, outcome.error
    assert setting == ("on",)  # transaction-local: the connection's own afterwards
    for tenant in rls_tenants:
        with owner_connection(autocommit=True) as conn, conn.transaction():
            conn.execute(bind_tenant(tenant.pk))
            found = conn.execute(
                sql.SQL("SELECT DISTINCT description FROM {}.tasks WHERE tenant_id = %s").format(
                    sql.Identifier(SHARED_SCHEMA)
                ),
                (tenant.pk,),
            ).fetchall()
        assert found == [("off",)]
