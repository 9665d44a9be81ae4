"""The owner-role pool across a real PostgreSQL restart (a private cluster, tests.private_postgres)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tenants import database_roles
from tenants.database_roles import owner_connection
from tests.private_postgres import PrivateCluster


@pytest.fixture
def owner_pool_on_private_cluster(settings) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster().init().start()
    settings.MIGRATION_DATABASE_URL = cluster.url()
    database_roles._owner_pool.cache_clear()
    try:
        yield cluster
    finally:
        database_roles._owner_pool().close()
        database_roles._owner_pool.cache_clear()
        cluster.remove()


def backend_pid() -> int:
    with owner_connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_after_a_restart_the_pool_hands_out_live_connections(
    owner_pool_on_private_cluster: PrivateCluster, mode: str
) -> None:
    before = backend_pid()  # a connection now idle in the pool
    owner_pool_on_private_cluster.restart(mode)
    assert backend_pid() != before  # the dead one was checked and replaced, not handed out
