"""A batch lane replaces its owner connection every FANOUT_RECYCLE_SCHEMAS schemas.

In-process and deterministic: the lane migrates this test's own tenants one by one, and the
backend that migrates each is read with pg_backend_pid() on the lane's connection just before;
no worker, no timing. The old backends' exit is waited for with a generous deadline.
"""

from __future__ import annotations

import pytest

from control_plane.fanout.batches import Lane
from control_plane.fanout.models import MigrationRun
from migrations_sqla.migrator import owner_engine
from tests.fanout.support import wait_until
from tests.migrations_sqla.support import TEST_REVISION, schema_state
from tests.superuser import superuser_connection

pytestmark = pytest.mark.usefixtures("committed", "fresh_owner_pool")


@pytest.fixture
def fresh_owner_pool() -> None:
    """The count of schemas a connection served lives on its pool record: a lane run in this
    process by an earlier test would leave some on a pooled connection, and the groups below
    start from fresh connections."""
    owner_engine().dispose()


def migrate_one_by_one(lane: Lane, schemas: list[str]) -> list[int]:
    """Migrate `schemas` through `lane`; the backend pid that migrated each."""
    pids = []
    for schema in schemas:
        pids.append(int(lane.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
        outcome = lane.migrate(schema)
        assert outcome.ok, outcome.error
    return pids


def live_backends(pids: set[int]) -> set[int]:
    with superuser_connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [sorted(pids)]
        ).fetchall()
    return {int(row[0]) for row in rows}  # type: ignore[call-overload]


def test_a_lane_replaces_its_connection_every_few_schemas(
    tenants_at_base, script_location, settings
) -> None:
    settings.FANOUT_RECYCLE_SCHEMAS = 3
    schemas = [t.schema_name for t in tenants_at_base(7)]
    run = MigrationRun(target={"alembic": TEST_REVISION}, script_location=script_location)

    with Lane(run) as lane:
        pids = migrate_one_by_one(lane, schemas)

    # Three schemas a backend: 3 + 3 + 1, each group on a backend of its own.
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3, pids
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
    # The replaced backends exited (invalidated, not parked in the pool with their caches).
    wait_until(lambda: not live_backends({pids[0], pids[3]}), timeout=60, interval=0.2)


def test_recycling_off_keeps_one_connection(tenants_at_base, script_location, settings) -> None:
    settings.FANOUT_RECYCLE_SCHEMAS = 0
    schemas = [t.schema_name for t in tenants_at_base(4)]
    run = MigrationRun(target={"alembic": TEST_REVISION}, script_location=script_location)

    with Lane(run) as lane:
        pids = migrate_one_by_one(lane, schemas)

    assert len(set(pids)) == 1, pids
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
