"""Row-level security in every placement (the shared schema, the template, tenant schemas and
clones), read from the catalog and tried as the app role."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from tenants.cloning import BOOKKEEPING_TABLES, TEMPLATE_SCHEMA, clone_schema
from tenants.database_roles import app_role_name, owner_connection
from tenants.ids import drop_id_sequence, ensure_id_sequence
from tenants.models import Isolation
from tenants.placement import SHARED_SCHEMA
from tenants.provisioning import drop_schema
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


@pytest.fixture
def app() -> Iterator[psycopg.Connection]:
    """A plain psycopg connection as the app role, the role web and workers use."""
    url = settings.DATABASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def shared_tables(conn: psycopg.Connection) -> list[tuple[str, bool, bool, str]]:
    return conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
        (SHARED_SCHEMA,),
    ).fetchall()


def test_every_shared_table_forces_rls_with_a_policy_per_command(app: psycopg.Connection) -> None:
    tables = shared_tables(app)
    data_tables = [t for t in tables if t[0] != "alembic_version"]
    assert {t[0] for t in data_tables} >= {"projects", "tasks", "comments", "tasks_history"}
    for name, enabled, forced, owner in data_tables:
        assert (enabled, forced) == (True, True), name
        assert owner != app_role_name(), name
        commands = {
            row[0]
            for row in app.execute(
                "SELECT polcmd FROM pg_policy WHERE polrelid = format('%%I.%%I', %s::text, %s::text)::regclass",
                (SHARED_SCHEMA, name),
            )
        }
        assert {COMMANDS[c] for c in commands} == set(COMMANDS.values()), name


def test_the_only_unguarded_table_is_out_of_the_app_roles_reach(app: psycopg.Connection) -> None:
    privileges = app.execute(
        "SELECT has_table_privilege(%s, 'SELECT'), has_table_privilege(%s, 'UPDATE')",
        (f"{SHARED_SCHEMA}.alembic_version", f"{SHARED_SCHEMA}.alembic_version"),
    ).fetchone()
    assert privileges == (False, False)


def test_app_role_cannot_bypass_rls(app: psycopg.Connection) -> None:
    row = app.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (False, False)


@pytest.fixture
def two_tenant_rows() -> Iterator[tuple[int, int]]:
    """One project for each of two made-up tenant ids, inserted as the owner (RLS is forced on
    the owner too, so each insert sets its tenant)."""
    tenant_ids = (900_000_001, 900_000_002)
    with owner_connection() as conn:
        for tenant_id in tenant_ids:
            ensure_id_sequence(conn, tenant_id)  # ids come from the tenant's own sequence
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
                conn.execute(
                    "INSERT INTO shared.projects (tenant_id, key, name) VALUES (%s, 'RLS', 'rls')",
                    (tenant_id,),
                )
    yield tenant_ids
    with owner_connection() as conn:
        for tenant_id in tenant_ids:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
                conn.execute("DELETE FROM shared.projects WHERE tenant_id = %s", (tenant_id,))
                conn.execute(
                    "DELETE FROM shared.projects_history WHERE tenant_id = %s", (tenant_id,)
                )
            drop_id_sequence(conn, tenant_id)


def visible_tenants(conn: psycopg.Connection) -> set[int]:
    return {
        r[0]
        for r in conn.execute("SELECT DISTINCT tenant_id FROM shared.projects WHERE key = 'RLS'")
    }


def test_no_tenant_set_sees_nothing_on_fresh_and_pooled_connections(app, two_tenant_rows) -> None:
    first, _ = two_tenant_rows
    assert visible_tenants(app) == set()  # fresh: the setting was never defined
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(first),))
        assert visible_tenants(app) == {first}
    # Pooled: the transaction-local value is gone after commit and reads as '' not NULL.
    assert app.execute("SELECT current_setting('app.tenant_id', true)").fetchone() == ("",)
    assert visible_tenants(app) == set()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
        app.execute(
            "INSERT INTO shared.projects (tenant_id, key, name) VALUES (%s, 'X', 'x')", (first,)
        )


def test_a_tenant_sees_and_changes_only_its_own_rows(app, two_tenant_rows) -> None:
    first, second = two_tenant_rows
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(first),))
        assert visible_tenants(app) == {first}
        updated = app.execute(
            "UPDATE shared.projects SET name = 'hijacked' WHERE tenant_id = %s", (second,)
        )
        assert updated.rowcount == 0
        deleted = app.execute("DELETE FROM shared.projects WHERE tenant_id = %s", (second,))
        assert deleted.rowcount == 0
    insert_for_other = "INSERT INTO shared.projects (tenant_id, key, name) VALUES (%s, 'X', 'x')"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_tenant(app, first, insert_for_other, (second,))
    move_to_other = "UPDATE shared.projects SET tenant_id = %s WHERE tenant_id = %s"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_tenant(app, first, move_to_other, (second, first))


def as_tenant(conn: psycopg.Connection, tenant_id: int, statement: str, params: tuple) -> None:
    """Run one statement in a transaction bound to `tenant_id`, as a request would."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        conn.execute(statement, params)


@pytest.fixture
def schema_tenants(committed: None) -> Iterator[tuple[TenantFixture, TenantFixture]]:
    """Two schema-mode tenants, each with one project of its own."""
    pair = (provisioned_tenant(Isolation.SCHEMA), provisioned_tenant(Isolation.SCHEMA))
    for fixture in pair:
        response = fixture.api().post(
            "/api/v1/projects", {"key": "OWN", "name": fixture.tenant.slug}
        )
        assert response.status_code == 201, response.content
    yield pair
    for fixture in pair:
        discard(fixture)


@pytest.fixture
def clone(unique: str) -> Iterator[str]:
    """A fresh clone of the template, as a spare or a moved-in tenant gets one."""
    name = f"t_rls_{unique}"
    with owner_connection(autocommit=True) as conn:
        clone_schema(conn, name, grant_to=app_role_name())
    yield name
    with owner_connection() as conn:
        drop_schema(conn, name)


def test_every_table_of_every_placement_forces_rls_with_a_policy_per_command(
    app: psycopg.Connection, schema_tenants: tuple[TenantFixture, TenantFixture], clone: str
) -> None:
    schemas = [
        SHARED_SCHEMA,
        TEMPLATE_SCHEMA,
        clone,
        *(f.tenant.schema_name for f in schema_tenants),
    ]
    rows = app.execute(
        "SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        "       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid"
        "               AND a.attname = 'tenant_id' AND NOT a.attisdropped),"
        "       (SELECT array_agg(DISTINCT p.polcmd::text) FROM pg_policy p WHERE p.polrelid = c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND (n.nspname = ANY(%s) OR n.nspname LIKE 't\\_%%')",
        (schemas,),
    ).fetchall()
    assert {r[0] for r in rows} >= set(schemas)
    guarded = [r for r in rows if r[4]]
    assert {r[1] for r in rows if not r[4]} <= set(BOOKKEEPING_TABLES)
    assert {r[1] for r in guarded if r[0] == clone} == {
        "projects", "tasks", "comments", "projects_history", "tasks_history", "comments_history",
    }  # fmt: skip
    for schema, table, enabled, forced, _tenant_id, commands in guarded:
        assert (enabled, forced) == (True, True), f"{schema}.{table}"
        assert {COMMANDS[c] for c in commands or ()} == set(COMMANDS.values()), f"{schema}.{table}"


def test_a_query_naming_another_tenants_schema_sees_and_changes_nothing(
    app: psycopg.Connection, schema_tenants: tuple[TenantFixture, TenantFixture]
) -> None:
    """A bug that puts tenant B's schema under tenant A's transaction finds no rows."""
    a, b = (f.tenant for f in schema_tenants)
    other = sql.Identifier(b.schema_name, "projects")
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(a.pk),))
        assert app.execute(sql.SQL("SELECT count(*) FROM {}").format(other)).fetchone() == (0,)
        assert app.execute(sql.SQL("UPDATE {} SET name = 'x'").format(other)).rowcount == 0
        assert app.execute(sql.SQL("DELETE FROM {}").format(other)).rowcount == 0
    with app.transaction():  # its own tenant still sees its row there
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(b.pk),))
        assert app.execute(sql.SQL("SELECT count(*) FROM {}").format(other)).fetchone() == (1,)
    insert = sql.SQL("INSERT INTO {} (tenant_id, key, name) VALUES (%s, 'X', 'x')").format(other)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_tenant(app, a.pk, insert.as_string(app), (b.pk,))


@pytest.fixture(params=[Isolation.SCHEMA, Isolation.RLS], ids=["schema", "rls"])
def tenant_with_project(
    request: pytest.FixtureRequest, committed: None
) -> Iterator[tuple[str, int, int]]:
    """(placement, tenant id, project id) of a new tenant in each mode."""
    fixture = provisioned_tenant(request.param)
    response = fixture.api().post("/api/v1/projects", {"key": "HIST", "name": "history"})
    assert response.status_code == 201, response.content
    schema = fixture.tenant.schema_name if request.param == Isolation.SCHEMA else SHARED_SCHEMA
    yield schema, fixture.tenant.pk, response.json()["id"]
    discard(fixture)


def update_while_copying(
    conn: psycopg.Connection, schema: str, tenant_id: int, project: int
) -> int:
    """Update the project with app.copying_tenant on; how many history rows the update wrote."""
    history = sql.Identifier(schema, "projects_history")
    count = sql.SQL("SELECT count(*) FROM {} WHERE row_id = %s").format(history)
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        (before,) = conn.execute(count, (project,)).fetchone() or (0,)
        conn.execute("SELECT set_config('app.copying_tenant', 'on', true)")
        updated = conn.execute(
            sql.SQL("UPDATE {} SET name = name || '!', version = version + 1 WHERE id = %s").format(
                sql.Identifier(schema, "projects")
            ),
            (project,),
        )
        assert updated.rowcount == 1
        (after,) = conn.execute(count, (project,)).fetchone() or (0,)
    return int(after - before)


def test_the_app_role_cannot_switch_history_off(app, tenant_with_project) -> None:
    assert update_while_copying(app, *tenant_with_project) == 1


def test_the_owner_copying_a_tenant_writes_no_history(tenant_with_project) -> None:
    with owner_connection() as owner:
        assert update_while_copying(owner, *tenant_with_project) == 0
