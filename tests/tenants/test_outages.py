"""PostgreSQL unreachable or restarted: 503 problem+json with Retry-After, never 500, from the
Django ORM path (tenant resolution, authentication) and the SQLAlchemy path (TaskFlow data);
/readyz says 503 without naming hosts, ports or errors.

The outages are real: a private cluster (tests.private_postgres) stopped with `pg_ctl -m fast`
or `-m immediate`, or a port nothing listens on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from django.db import connections
from django.test import Client

from tenants import binding
from tenants.models import Tenant
from tenants.outages import is_connection_failure
from tests.factories import make_member, make_tenant
from tests.private_postgres import PrivateCluster
from tests.processes import free_port


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    private = PrivateCluster().init().start()
    try:
        yield private
    finally:
        private.remove()


@pytest.fixture
def django_on(committed: None) -> Iterator[Any]:
    """Point Django's default connection at another server for the test, then back."""
    connection = connections["default"]
    saved = dict(connection.settings_dict)

    def point(port: int) -> None:
        connection.close()
        connection.settings_dict.update(
            HOST="127.0.0.1", PORT=str(port), NAME="postgres", USER="postgres", PASSWORD=""
        )

    yield point
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


def assert_503(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    assert b"127.0.0.1" not in response.content


def test_an_unreachable_database_is_503_at_tenant_resolution(django_on, settings) -> None:
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    django_on(free_port())
    assert_503(Client().get("/api/v1/projects", HTTP_HOST="nobody-cached.localhost"))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_shut_down_under_an_open_connection_is_503(
    cluster: PrivateCluster, django_on, settings, mode: str
) -> None:
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    django_on(cluster.port)
    connections["default"].ensure_connection()  # open, then the server goes away under it
    cluster.stop(mode)
    assert_503(Client().get("/api/v1/projects", HTTP_HOST="nobody-cached.localhost"))


def test_readyz_is_503_without_naming_the_database(django_on) -> None:
    django_on(free_port())
    response = Client().get("/readyz", HTTP_HOST="localhost")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["postgres"] == {**checks["postgres"], "ok": False, "detail": "unavailable"}
    assert b"127.0.0.1" not in response.content
    assert b"5432" not in response.content
    assert b"Error" not in response.content


@pytest.fixture
def engine_on(settings) -> Iterator[Any]:
    """Point the TaskFlow engine (SQLAlchemy) at another server for the test, then back."""

    def point(url: str) -> None:
        binding.engine.cache_clear()
        settings.DATABASE_URL = url

    yield point
    binding.engine().dispose()
    binding.engine.cache_clear()


def test_an_unreachable_database_is_503_on_the_sqlalchemy_path(
    engine_on, committed, unique
) -> None:
    tenant = make_tenant(f"o{unique}")
    _, token = make_member(tenant, f"o{unique}@example.com")
    engine_on(f"postgres://postgres@127.0.0.1:{free_port()}/postgres")
    response = Client().get(
        "/api/v1/projects", HTTP_HOST=f"o{unique}.localhost", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert_503(response)
    Tenant.objects.filter(pk=tenant.pk).delete()  # no storage: a fan-out must not meet it


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_connection_errors_of_a_restart_are_told_from_other_errors(
    cluster: PrivateCluster, mode: str
) -> None:
    engine = sa.create_engine(binding.sqlalchemy_url(cluster.url()), poolclass=sa.NullPool)
    with engine.connect() as conn:
        with pytest.raises(sa.exc.ProgrammingError) as bad_statement:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        assert not is_connection_failure(bad_statement.value)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        cluster.stop(mode)
        with pytest.raises(sa.exc.OperationalError) as lost:
            conn.execute(sa.text("SELECT 1"))
    assert is_connection_failure(lost.value)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(cluster.url().replace("postgres://", "postgresql://"))
    assert is_connection_failure(refused.value)
