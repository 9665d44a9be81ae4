"""Plain helpers of the evolution tests: tenants with tasks in both placements, reading rows
as the owner, waiting for an evolution, and putting the platform back."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from control_plane.evolution import phases
from control_plane.evolution.models import Evolution
from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus
from tenants.database_roles import owner_connection
from tenants.ids import ensure_id_sequence
from tenants.models import Isolation, Tenant, TenantStatus, schema_name_for
from tenants.placement import SHARED_SCHEMA
from tests.fanout.support import wait_for_run
from tests.migrations_sqla.support import drop_tenants, make_tenants, set_template

EXPANDED = "0007"  # the expand revision
# Where the expand phase takes every schema: "head", which 0008 (the CASE sort keys) puts above
# the expand revision and below the contract.
EXPAND_TARGET = "0008"


def make_rls_tenants(prefix: str, count: int) -> list[Tenant]:
    """Active rls-mode tenants, each with its id sequence (as provisioning makes it)."""
    tenants = [
        Tenant.objects.create(
            name=f"{prefix} r{i}",
            slug=f"{prefix}r{i:03d}",
            schema_name=schema_name_for(f"{prefix}r{i:03d}"),
            isolation=Isolation.RLS,
            status=TenantStatus.ACTIVE,
        )
        for i in range(count)
    ]
    with owner_connection(autocommit=True) as conn:
        for tenant in tenants:
            ensure_id_sequence(conn, tenant.pk)
    return tenants


def schema_of(tenant: Tenant) -> str:
    return SHARED_SCHEMA if tenant.isolation == Isolation.RLS else tenant.schema_name


def add_tasks(tenant: Tenant, count: int, *, with_due: bool = True) -> None:
    """A project and `count` tasks, every third without a due date, written as old code does."""
    ident = sql.Identifier(schema_of(tenant))
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
        created = conn.execute(
            sql.SQL("INSERT INTO {}.projects (tenant_id, key, name) VALUES (%s, 'P', 'p')"
                    " RETURNING id").format(ident),
            (tenant.pk,),
        ).fetchone()  # fmt: skip
        assert created is not None
        project = created[0]
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.tasks (tenant_id, project_id, title, due_date)"
                " SELECT %s, %s, 't' || g, CASE WHEN %s AND g %% 3 <> 0"
                " THEN date '2026-12-01' + g END FROM generate_series(1, %s) g"
            ).format(ident),
            (tenant.pk, project, with_due, count),
        )
        conn.commit()


def rows(tenant: Tenant, columns: str = "id, due_date, due_at") -> list[tuple[Any, ...]]:
    ident = sql.Identifier(schema_of(tenant))
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
        found = conn.execute(
            sql.SQL("SELECT " + columns + " FROM {}.tasks WHERE tenant_id = %s ORDER BY id").format(
                ident
            ),
            (tenant.pk,),
        ).fetchall()
        conn.commit()
        return found


def execute(tenant: Tenant, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """`statement` with {s} the tenant's schema, as the owner with the tenant set."""
    ident = sql.Identifier(schema_of(tenant))
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
        cur = conn.execute(sql.SQL(statement).format(s=ident), params)
        out = cur.fetchall() if cur.description else []
        conn.commit()
        return out


def columns_of(schema: str, table: str = "tasks") -> set[str]:
    with owner_connection() as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            )
        }


def indexes_of(schema: str) -> dict[str, bool]:
    with owner_connection() as conn:
        return dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
                " ON c.oid = i.indexrelid WHERE c.relnamespace = %s::regnamespace",
                (schema,),
            ).fetchall()
        )


def wait_for(evolution: Evolution, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = phases.evolution_state(evolution)
        if state["finished"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"{evolution.name} still running: {phases.evolution_state(evolution)}")


def completed_without_watching(evolution: Evolution, phase: str, timeout: float = 120) -> bool:
    """Whether the evolution records `phase` done within `timeout` while this process only
    reads its row (never settles it): the fan-out's worker settled each run itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        completed = Evolution.objects.filter(pk=evolution.pk).values_list("completed", flat=True)
        if completed.get() == phase:
            return True
        time.sleep(0.1)
    return False


def restore_platform(prefix: str) -> None:
    """Every schema back at the released head, the switch off, the evolution forgotten."""
    Evolution.objects.filter(name="tasks_due_at").delete()
    from tenants.models import ReadSwitch

    ReadSwitch.objects.filter(name="tasks.due").delete()
    drop_tenants(prefix)
    Tenant.objects.filter(slug__startswith=prefix).delete()
    run = runs.start_run(to=EXPAND_TARGET, allow_downgrade=True, concurrency=2, batch_size=50)
    run = wait_for_run(run.pk, timeout=180)
    assert run.status == RunStatus.SUCCEEDED, run.error
    set_template("", EXPAND_TARGET)


__all__ = ["make_tenants", "set_template"]
