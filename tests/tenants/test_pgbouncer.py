"""Tenant binding and Django's own connection through a real PgBouncer in transaction pooling mode:
no session state of one client (search_path, app.* settings) ever reaches the next."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import override_settings
from django_tenants.utils import schema_context

from control_plane.celery import app as celery_app
from control_plane.tenancy.onboarding import (
    PROVISION_TASK,
    request_onboarding,
    validate_onboarding,
)
from control_plane.worker.tasks import ping
from migrations_sqla.django_state import migrate_tenant_apps
from tenants.binding import engine
from tenants.database_roles import app_role_name, owner_connection
from tenants.models import Isolation, Tenant, TenantStatus
from tenants.provisioning import drop_storage
from tests.conftest import WorkerProcess
from tests.pgbouncer import PgBouncer, start_pgbouncer
from tests.taskflow.conftest import discard, provisioned_tenant
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


def fresh_search_path(bouncer: PgBouncer, database_url: str | None = None) -> str:
    """The search_path a new client of `bouncer` starts with (with a pool of one: the one server
    connection every earlier client used)."""
    url = bouncer.url_for(database_url or settings.DATABASE_URL)
    url = url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as fresh:
        row = fresh.execute("SHOW search_path").fetchone()
    assert row is not None
    return str(row[0])


@contextmanager
def django_through(bouncer: PgBouncer) -> Iterator[BaseDatabaseWrapper]:
    """Django's own connection ("default", whatever role it has) goes through `bouncer`."""
    connection = connections["default"]
    saved = {key: connection.settings_dict[key] for key in ("HOST", "PORT")}
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(bouncer.port))
    try:
        yield connection
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.set_schema_to_public()  # type: ignore[attr-defined]


def search_path_of(connection: BaseDatabaseWrapper) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('search_path')")
        return str(cursor.fetchone()[0])


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
    taskflow_through_bouncer: str, bouncer: PgBouncer, committed
) -> None:
    """The isolation state machine with Django's connection and the TaskFlow engine both going
    through PgBouncer (HYPOTHESIS_ISOLATION_STEPS sets the long profile's length)."""
    with django_through(bouncer):
        run_isolation_machine(int(os.environ.get("HYPOTHESIS_ISOLATION_STEPS", "200")))


@pytest.fixture(scope="module")
def one_server() -> Iterator[PgBouncer]:
    """A PgBouncer with one server connection: every client's transactions share one backend."""
    started = start_pgbouncer(settings.DATABASE_URL, pool_size=1)
    yield started
    started.stop()


def test_djangos_connection_leaves_no_search_path_on_a_pooled_server(one_server, committed) -> None:
    """Django's own connection through transaction pooling: after it served a tenant's schema,
    in autocommit, in a transaction and after a savepoint rollback, the next client of the one
    server connection does not inherit that schema, while every statement of Django's saw it."""
    with django_through(one_server) as django_connection:
        django_connection.set_tenant(Tenant(schema_name="t_pooled_leak", slug="pooled_leak"))  # type: ignore[attr-defined]
        for _ in range(12):
            assert "t_pooled_leak" in search_path_of(django_connection)  # autocommit
            assert "t_pooled_leak" not in fresh_search_path(one_server)
        with transaction.atomic():
            assert "t_pooled_leak" in search_path_of(django_connection)
            try:
                with transaction.atomic():
                    assert "t_pooled_leak" in search_path_of(django_connection)
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            assert "t_pooled_leak" in search_path_of(django_connection)
            with schema_context("public"):
                assert "t_pooled_leak" not in search_path_of(django_connection)
            assert "t_pooled_leak" in search_path_of(django_connection)
        assert "t_pooled_leak" not in fresh_search_path(one_server)
        django_connection.set_schema_to_public()  # type: ignore[attr-defined]
        assert "t_pooled_leak" not in search_path_of(django_connection)


def test_schema_context_reads_the_tenants_tables_through_a_pooled_server(
    one_server, committed
) -> None:
    """A management command's `schema_context` through transaction pooling reads the tenant's
    own copy of a Django table (here django_content_type), in autocommit and in a transaction,
    and the public one outside it; nothing of it stays on the server connection."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    schema = fixture.tenant.schema_name
    label = f"probe_{fixture.tenant.slug}"
    with owner_connection() as conn:
        conn.execute(
            f'INSERT INTO "{schema}".django_content_type (app_label, model) VALUES (%s, %s)',
            (label, "probe"),
        )
    try:
        with django_through(one_server):
            for _ in range(5):
                with schema_context(schema):
                    assert ContentType.objects.filter(app_label=label).exists()
                    assert schema not in fresh_search_path(one_server)
                    with transaction.atomic():
                        assert ContentType.objects.filter(app_label=label).exists()
                    assert schema not in fresh_search_path(one_server)
                assert not ContentType.objects.filter(app_label=label).exists()
    finally:
        discard(fixture)


def test_tenant_requests_leave_no_search_path_on_a_pooled_server(one_server, committed) -> None:
    """Requests on tenant hosts, with Django's connection and the TaskFlow engine both through
    one pooled server connection: Django stays on the public schema, the TaskFlow session's
    settings are transaction-local, and nothing reaches the next client."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    url = one_server.url_for(settings.DATABASE_URL)
    engine.cache_clear()
    try:
        with (
            django_through(one_server),
            override_settings(DATABASE_URL=url, DATABASE_BEHIND_PGBOUNCER=True),
        ):
            api = fixture.api()
            project = api.post("/api/v1/projects", {"key": "PGB", "name": "pooled"})
            assert project.status_code == 201, project.content
            for index in range(5):
                created = api.post(
                    "/api/v1/tasks", {"project_id": project.json()["id"], "title": f"t{index}"}
                )
                assert created.status_code == 201, created.content
                listed = api.get("/api/v1/tasks")  # the binding and the page in one pipeline
                assert listed.status_code == 200
                assert len(listed.json()["results"]) == index + 1, listed.content
                assert fixture.tenant.schema_name not in fresh_search_path(one_server)
                with psycopg.connect(
                    one_server.url_for(settings.DATABASE_URL).replace(
                        "postgres://", "postgresql://", 1
                    ),
                    autocommit=True,
                    prepare_threshold=None,
                ) as fresh:
                    assert fresh.execute(
                        "SELECT current_setting('app.tenant_id', true)"
                    ).fetchone() in {("",), (None,)}
    finally:
        engine.cache_clear()
        discard(fixture)


def test_the_migrator_path_leaves_no_search_path_on_a_pooled_server(committed) -> None:
    """The fan-out's Django step for one tenant schema (migrate_schemas as the owner, the path
    a worker takes when a tenant app has a migration to run) through transaction pooling."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    owner_bouncer = start_pgbouncer(settings.MIGRATION_DATABASE_URL, pool_size=1)
    try:
        with override_settings(
            MIGRATION_DATABASE_URL=owner_bouncer.url_for(settings.MIGRATION_DATABASE_URL)
        ):
            migrate_tenant_apps(fixture.tenant.schema_name)
        assert fixture.tenant.schema_name not in fresh_search_path(
            owner_bouncer, settings.MIGRATION_DATABASE_URL
        )
    finally:
        owner_bouncer.stop()
        discard(fixture)


@pytest.mark.worker
def test_a_worker_through_a_pooled_server_leaves_no_session_state(
    one_server, committed, unique, monkeypatch
) -> None:
    """A real worker whose Django connection goes through one pooled server connection
    onboards a schema-mode tenant and answers pings: nothing of a tenant stays on the server."""
    queue = f"pooled_{unique}"
    monkeypatch.setenv("DATABASE_URL", one_server.url_for(settings.DATABASE_URL))
    monkeypatch.setenv("DATABASE_BEHIND_PGBOUNCER", "true")
    slug = f"pooled{unique}"
    requested = request_onboarding(
        data=validate_onboarding(
            name=slug,
            slug=slug,
            domain=f"{slug}.localhost",
            isolation=Isolation.SCHEMA,
            owner_email=f"owner-{slug}@example.com",
        ),
        enqueue=False,
    )
    worker = WorkerProcess("pooled", queues=queue, concurrency=1).start(timeout=120)
    try:
        celery_app.send_task(PROVISION_TASK, args=[requested.onboarding.pk], queue=queue).get(
            timeout=120
        )
        pings = [ping.apply_async(("x",), queue=queue).get(timeout=60) for _ in range(3)]
        path = fresh_search_path(one_server)
    finally:
        worker.stop()
        tenant = Tenant.objects.get(slug=slug)
        drop_storage(tenant)
        Tenant.objects.filter(pk=tenant.pk).delete()
    assert tenant.status == TenantStatus.ACTIVE
    assert all(p["role"] == app_role_name() for p in pings)
    assert tenant.schema_name not in path
    assert "t_" not in path, path
