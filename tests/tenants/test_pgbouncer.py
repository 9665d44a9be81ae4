"""Tenant binding through a real PgBouncer in transaction pooling mode."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.test import override_settings

from tenants.binding import engine
from tests.pgbouncer import PgBouncer, start_pgbouncer
from tests.taskflow.test_isolation import run_isolation_machine


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    # Two server connections for every client: sessions constantly share backends.
    started = start_pgbouncer(settings.DATABASE_URL, pool_size=2)
    yield started
    started.stop()


@pytest.fixture
def taskflow_through_bouncer(bouncer: PgBouncer) -> Iterator[str]:
    """The TaskFlow engine connects through PgBouncer for the duration of the test."""
    url = bouncer.url_for(settings.DATABASE_URL)
    engine.cache_clear()
    with override_settings(DATABASE_URL=url, DATABASE_BEHIND_PGBOUNCER=True):
        yield url
    engine.cache_clear()


def test_a_committed_tenant_setting_never_reaches_the_next_transaction(bouncer: PgBouncer) -> None:
    url = bouncer.url_for(settings.DATABASE_URL).replace("postgres://", "postgresql://", 1)
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as first,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as second,
    ):
        with first.transaction():
            first.execute("SELECT set_config('app.tenant_id', '42', true)")
            backend = first.execute("SELECT pg_backend_pid()").fetchone()
        # Whichever backend the next transaction gets (often the same one), the setting is gone.
        for conn in (first, second):
            with conn.transaction():
                assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone() in {
                    ("",),
                    (None,),
                }
        assert backend is not None


def test_isolation_holds_through_transaction_pooling(
    taskflow_through_bouncer: str, committed
) -> None:
    run_isolation_machine(200)
