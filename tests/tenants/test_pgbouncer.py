"""Tenant binding through a real PgBouncer in transaction pooling mode."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from tenants.binding import engine
from tenants.models import Tenant
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


@pytest.fixture(scope="module")
def one_server() -> Iterator[PgBouncer]:
    """A PgBouncer with one server connection: every client's transactions share one backend."""
    started = start_pgbouncer(settings.DATABASE_URL, pool_size=1)
    yield started
    started.stop()


@pytest.mark.xfail(
    strict=True,
    reason="django-tenants sets search_path for the session on Django's connection (issue 17);"
    " it must become transaction-local (or schema-qualified) before Django goes through PgBouncer",
)
def test_djangos_connection_leaves_no_search_path_on_a_pooled_server(one_server, committed) -> None:
    """Django's own connection (django-tenants' backend) through transaction pooling: after it
    served a tenant, the next client of the one server connection must not inherit its schema."""
    django_settings = {
        **connections["default"].settings_dict,
        "HOST": "127.0.0.1",
        "PORT": str(one_server.port),
    }
    through = type(connections["default"])(django_settings, alias="through_pgbouncer")
    try:
        through.set_tenant(Tenant(schema_name="t_pooled_leak", slug="pooled_leak"))  # type: ignore[attr-defined]
        with through.cursor() as cursor:  # autocommit: the server goes back to the pool after it
            cursor.execute("SELECT 1")
        url = one_server.url_for(settings.DATABASE_URL).replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as fresh:
            row = fresh.execute("SHOW search_path").fetchone()
    finally:
        through.close()
    assert row is not None
    assert "t_pooled_leak" not in row[0]
