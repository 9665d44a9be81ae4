"""Migration 0006 over existing rows: ids stay as clients hold them, new ones come per tenant.

A scratch schema at 0005 holds two tenants' rows interleaved, as the shared schema does (0006 is
the same DDL in every placement), with ids from the platform sequence; the tenants are recorded
but have no sequence yet, as before the upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from migrations_sqla.migrator import Result, migrate_schema
from tenants.database_roles import owner_connection
from tenants.ids import drop_id_sequence, sequence_name
from tenants.models import Tenant
from tests.factories import make_tenant

ROWS = "SELECT tenant_id, id, title, project_id FROM {s}.tasks ORDER BY tenant_id, id"


@pytest.fixture
def at_0005(unique: str, committed: None) -> Iterator[tuple[str, list[Tenant]]]:
    schema = f"t_ids_{unique}"
    with owner_connection() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    tenants = [make_tenant(f"ids{n}{unique}") for n in "ab"]
    assert migrate_schema(schema, revision="0005").result == Result.MIGRATED
    yield schema, tenants
    with owner_connection() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for tenant in tenants:
            drop_id_sequence(conn, tenant.pk)
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).delete()


def as_tenant(conn: psycopg.Connection, tenant_id: int, statement: str, *args: Any) -> Any:
    """One statement in a transaction bound to `tenant_id` (row-level security is forced)."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        return conn.execute(statement, args).fetchall()


def test_0006_keeps_existing_ids_and_gives_each_tenant_its_own_sequence(
    at_0005: tuple[str, list[Tenant]],
) -> None:
    schema, (a, b) = at_0005
    s = f'"{schema}"'
    with owner_connection() as conn:
        projects = {
            t.pk: as_tenant(
                conn, t.pk, f"INSERT INTO {s}.projects (tenant_id, key, name)"
                " VALUES (%s, 'P', 'p') RETURNING id", t.pk,
            )[0][0]
            for t in (a, b)
        }  # fmt: skip
        for i in range(3):  # interleaved: the platform sequence hands out ids to both
            for t in (a, b):
                (task,) = as_tenant(
                    conn, t.pk, f"INSERT INTO {s}.tasks (tenant_id, project_id, title)"
                    " VALUES (%s, %s, %s) RETURNING id", t.pk, projects[t.pk], f"{t.slug}-{i}",
                )  # fmt: skip
                as_tenant(
                    conn, t.pk, f"INSERT INTO {s}.comments (tenant_id, task_id, author_id, body)"
                    " VALUES (%s, %s, 1, 'c') RETURNING id", t.pk, task[0],
                )  # fmt: skip
        before = {t.pk: as_tenant(conn, t.pk, ROWS.format(s=s)) for t in (a, b)}
        platform_last = conn.execute("SELECT last_value FROM public.taskflow_id_seq").fetchone()
        assert platform_last is not None
        for t in (a, b):
            gone = conn.execute("SELECT to_regclass(%s)", (f"public.{sequence_name(t.pk)}",))
            assert gone.fetchone() == (None,)

    assert migrate_schema(schema).result == Result.MIGRATED

    with owner_connection() as conn:
        for t in (a, b):  # every row keeps its id, its references and its history
            assert as_tenant(conn, t.pk, ROWS.format(s=s)) == before[t.pk]
        keys = dict(
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) || CASE WHEN convalidated THEN ''"
                " ELSE ' (not validated)' END FROM pg_constraint"
                " WHERE connamespace = %s::regnamespace AND contype IN ('p', 'f')",
                (schema,),
            ).fetchall()
        )
        assert keys["projects_pkey"] == keys["tasks_pkey"] == keys["comments_pkey"]
        assert keys["tasks_pkey"] == "PRIMARY KEY (tenant_id, id)"
        assert keys["tasks_project_fkey"] == (
            "FOREIGN KEY (tenant_id, project_id) REFERENCES"
            f" {schema}.projects(tenant_id, id) ON DELETE CASCADE"
        )
        assert keys["comments_task_fkey"].endswith("ON DELETE CASCADE")  # validated too

        new = {}
        for t in (a, b):
            new[t.pk] = [
                as_tenant(
                    conn, t.pk, f"INSERT INTO {s}.tasks (tenant_id, project_id, title)"
                    " VALUES (%s, %s, 'new') RETURNING id", t.pk, projects[t.pk],
                )[0][0]
                for _ in range(3)
            ]  # fmt: skip
        # Past every id the platform sequence gave, then consecutive per tenant (the row and its
        # history entry); both tenants hold the same new ids, apart by the (tenant_id, id) key.
        start = platform_last[0] + 1
        assert new[a.pk] == new[b.pk] == [start, start + 2, start + 4]
        old_ids = {row[1] for rows in before.values() for row in rows}
        assert max(old_ids) < start
