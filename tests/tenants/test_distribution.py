"""The placement check: what in the catalog would block distribution on a Citus cluster."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from psycopg import sql

from migrations_sqla.history_triggers import recreate_history_triggers
from migrations_sqla.migrator import CITUS_ALLOW_TRIGGERS, migrate_schema
from tenants.citus import is_citus
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.distribution import (
    CITUS_HISTORY_FUNCTION_NAME,
    distribute_shared_tables,
    distribution_blockers,
    ensure_citus_history_function,
    point_history_at_citus_function,
    shared_tables_distributed,
)
from tenants.local_settings import set_local
from tenants.models import Isolation
from tenants.placement import SHARED_SCHEMA
from tests.taskflow.conftest import discard, provisioned_tenant

# Statement-level history triggers with transition tables, and the due_at sync: listed, since
# Citus refuses triggers unless told; a distributed schema's history triggers call the Citus-mode
# history function (tenants.distribution, README "Citus").
KNOWN_TRIGGERS = {
    f"{table}_history_{op}"
    for table in ("projects", "tasks", "comments")
    for op in ("insert", "update", "delete")
} | {"tasks_due_sync"}


@pytest.mark.parametrize("schema", [TEMPLATE_SCHEMA, SHARED_SCHEMA])
def test_the_template_and_shared_schema_hold_no_key_that_blocks_distribution(schema) -> None:
    """Every key and foreign key includes tenant_id (per-tenant keys since migration 0006):
    only the known triggers stand in the way."""
    with owner_connection() as conn:
        found = distribution_blockers(conn, schema, by_rows=True)
    assert {b.kind for b in found} == {"trigger"}, [b.line() for b in found]
    assert {b.name for b in found} == KNOWN_TRIGGERS


def test_keys_without_tenant_id_and_foreign_keys_leaving_the_schema_are_listed(unique) -> None:
    schema = f"dist_{unique}"
    with owner_connection() as conn:
        conn.execute(
            f"CREATE SCHEMA {schema};"
            f" CREATE TABLE {schema}.things (tenant_id bigint, id bigint PRIMARY KEY,"
            f"  code text UNIQUE, ok bigint, UNIQUE (tenant_id, ok));"
            f" CREATE TABLE {schema}.notes (tenant_id bigint, thing bigint"
            f"  REFERENCES {schema}.things (id), PRIMARY KEY (tenant_id, thing));"
            f" CREATE TABLE {schema}.plain (n int);"
            f" CREATE TABLE {schema}.outward (tenant_id bigint,"
            f"  ref integer REFERENCES public.django_migrations (id))"
        )
    try:
        with owner_connection() as conn:
            by_rows = {
                (b.table, b.kind, b.name) for b in distribution_blockers(conn, schema, by_rows=True)
            }
            whole = {
                (b.table, b.kind, b.name)
                for b in distribution_blockers(conn, schema, by_rows=False)
            }
    finally:
        with owner_connection() as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert by_rows == {
        ("things", "key", "things_pkey"),
        ("things", "key", "things_code_key"),
        ("notes", "foreign_key", "notes_thing_fkey"),
        ("plain", "no_tenant_id", "plain"),
        ("outward", "foreign_key", "outward_ref_fkey"),
    }
    # Distributed whole, a schema's own keys are fine; leaving the schema is not.
    assert whole == {("outward", "foreign_key", "outward_ref_fkey")}


def test_placement_check_lists_the_template_triggers_and_multi_statement_steps(capsys) -> None:
    call_command("placement_check")
    out = capsys.readouterr().out
    assert "template.tasks\ttrigger\ttasks_history_insert" in out
    assert "shared.tasks\ttrigger\ttasks_due_sync" in out
    assert "revision 0001\tupgrade\tmulti_statement" in out
    assert "\tkey\t" not in out
    assert "\tforeign_key\t" not in out
    with pytest.raises(CommandError, match="would block distribution on Citus"):
        call_command("placement_check", "--strict")
    with pytest.raises(CommandError, match="no schema 'nowhere'"):
        call_command("placement_check", "nowhere")


# One task's life, as the API writes it: insert, two updates (one a soft delete), a hard delete.
LIFE = (
    "INSERT INTO {s}.tasks (tenant_id, project_id, title) VALUES ({t}, {p}, {title})",
    "UPDATE {s}.tasks SET title = title || '!', version = version + 1 WHERE title = {title}",
    "UPDATE {s}.tasks SET deleted_at = '2026-12-01T00:00:00Z', version = version + 1 WHERE title = {title} || '!'",
    "DELETE FROM {s}.tasks WHERE title = {title} || '!'",
)
HISTORY_OF = (
    "SELECT h.id, h.operation, h.version, h.changes, h.changes_format, h.actor_id, h.request_id"
    " FROM {s}.tasks_history h JOIN {s}.tasks_history f ON f.tenant_id = h.tenant_id"
    " AND f.row_id = h.row_id AND f.operation = 'insert' AND f.changes->>'title' = {title}"
    " ORDER BY h.id"
)


def live_a_task(conn, schema: str, tenant_id: int, project_id: int, title: str) -> list[tuple]:
    values = {"s": sql.Identifier(schema), "t": sql.Literal(tenant_id)}
    values |= {"p": sql.Literal(project_id), "title": sql.Literal(title)}
    with conn.transaction():
        conn.execute(set_local({"app.tenant_id": tenant_id, "app.actor_id": 7}))
        conn.execute(set_local({"app.request_id": f"req-{title}"}))
        for statement in LIFE:
            conn.execute(sql.SQL(statement).format(**values))
        return conn.execute(sql.SQL(HISTORY_OF).format(**values)).fetchall()


def test_the_citus_history_function_records_what_v3_records_with_ids_growing_per_row(
    committed: None,
) -> None:
    """Off Citus (and on a coordinator's local tables) the Citus-mode history function writes
    `<table>_history` as v3 does; the ids it supplies itself grow with each entry of a row, so
    the history API's order (by id) is the order of writes. On a Citus coordinator with
    CITUS_DISTRIBUTE_SCHEMAS on, the tenant is distributed already and both rows go through it
    on the worker holding the schema."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    tenant_id, schema = fixture.tenant.pk, fixture.tenant.schema_name
    try:
        with owner_connection(autocommit=True) as conn:
            with conn.transaction():
                conn.execute(set_local({"app.tenant_id": tenant_id}))
                project = conn.execute(
                    sql.SQL("INSERT INTO {}.projects (tenant_id, key, name)"
                            " VALUES (%s, 'H', 'h') RETURNING id").format(sql.Identifier(schema)),
                    (tenant_id,),
                ).fetchone()  # fmt: skip
                assert project is not None
                project_id = project[0]
            before = live_a_task(conn, schema, tenant_id, project_id, "before")
            with conn.transaction():
                ensure_citus_history_function(conn)
                ensure_citus_history_function(conn)  # once only, then nothing
                point_history_at_citus_function(conn, schema)
                assert point_history_at_citus_function(conn, schema) == 0
            functions = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT tgfoid::regproc::text FROM pg_trigger"
                    " WHERE tgrelid = %s::regclass AND NOT tgisinternal"
                    " AND tgname LIKE 'tasks_history_%%'",
                    (f"{schema}.tasks",),
                )
            }
            after = live_a_task(conn, schema, tenant_id, project_id, "after")
            distributed = is_citus(conn) and bool(
                conn.execute(
                    "SELECT count(*) FROM citus_schemas WHERE schema_name = %s::regnamespace",
                    (schema,),
                ).fetchall()[0][0]
            )
    finally:
        discard(fixture)
    assert functions == {CITUS_HISTORY_FUNCTION_NAME}
    assert [row[1] for row in after] == ["insert", "update", "soft_delete", "delete"]
    assert [row[0] for row in after] == [1, 2, 3, 4]

    # Same entries but for the id, the title and the request id the function was given.
    def entry(row: tuple, title: str) -> tuple:
        changes = {k: v for k, v in row[3].items() if k != "title"}
        return (row[1], row[2], changes, row[4], row[5], row[6].replace(title, ""))

    assert [entry(r, "before") for r in before] == [entry(r, "after") for r in after]
    assert all(r[5] == 7 for r in after)
    ids_before = [row[0] for row in before]
    if distributed:  # the Citus function wrote both rows' history
        assert ids_before == [1, 2, 3, 4]
    else:  # v3 drew them from the tenant's sequence, shared with the rows themselves
        assert ids_before == sorted(set(ids_before))
        assert len(ids_before) == 4


SHARED_DISTRIBUTION = """
SELECT c.relname, column_to_column_name(p.logicalrelid, p.partkey), p.colocationid
FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
WHERE c.relnamespace = %s::regnamespace ORDER BY c.relname
"""


@pytest.mark.citus
def test_on_citus_the_shared_tables_are_distributed_by_tenant_id_and_colocated() -> None:
    """setup_platform (CITUS_DISTRIBUTE_SHARED, as `platform/dev.sh citus` runs it) distributes
    every shared table with tenant_id by it, all in one colocation group, history tables too;
    alembic_version stays on the coordinator, and a second call finds nothing to do."""
    with owner_connection(autocommit=True) as conn:
        found = conn.execute(SHARED_DISTRIBUTION, (SHARED_SCHEMA,)).fetchall()
        with_tenant_id = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                " WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'"
                " AND a.attname = 'tenant_id' AND NOT a.attisdropped",
                (SHARED_SCHEMA,),
            )
        }
        again = distribute_shared_tables(conn)
    assert {row[0] for row in found} == with_tenant_id
    assert {"tasks", "tasks_history", "projects", "comments"} <= with_tenant_id
    assert {row[1] for row in found} == {"tenant_id"}
    assert len({row[2] for row in found}) == 1
    assert again == []


@pytest.mark.citus
def test_on_citus_history_of_a_distributed_shared_table_is_written_on_its_shard(
    committed: None,
) -> None:
    """An rls tenant's task lives on a worker's shard of shared.tasks: its history triggers fire
    there and the Citus history function writes the colocated shard of shared.tasks_history,
    with the actor and request id the SET LOCALs carried to the worker, ids growing per row."""
    fixture = provisioned_tenant(Isolation.RLS)
    tenant_id = fixture.tenant.pk
    try:
        with owner_connection(autocommit=True) as conn:
            with conn.transaction():
                conn.execute(set_local({"app.tenant_id": tenant_id}))
                project = conn.execute(
                    sql.SQL("INSERT INTO {}.projects (tenant_id, key, name)"
                            " VALUES (%s, 'H', 'h') RETURNING id").format(
                        sql.Identifier(SHARED_SCHEMA)
                    ),
                    (tenant_id,),
                ).fetchone()  # fmt: skip
                assert project is not None
            life = live_a_task(conn, SHARED_SCHEMA, tenant_id, project[0], "shared")
            distributed = shared_tables_distributed(conn)
    finally:
        discard(fixture)
    assert "tasks" in distributed
    assert "tasks_history" in distributed
    assert [row[1] for row in life] == ["insert", "update", "soft_delete", "delete"]
    assert [row[0] for row in life] == [1, 2, 3, 4]
    assert {(row[5], row[6]) for row in life} == {(7, "req-shared")}


TASKS_HISTORY_TRIGGERS = ("tasks_history_delete", "tasks_history_insert", "tasks_history_update")
# What the tasks history triggers record at the released head (0007's list).
TASKS_AUDITED_NOW = (
    "project_id", "external_id", "title", "description", "status", "priority",
    "assignee_id", "due_date", "deleted_at",
)  # fmt: skip


def history_functions(schema: str) -> dict[str, str]:
    """Each history trigger of `schema`.tasks -> the function it calls."""
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT tgname, p.proname FROM pg_trigger JOIN pg_proc p ON p.oid = tgfoid"
            " WHERE tgrelid = %s::regclass AND tgname LIKE 'tasks\\_history\\_%%'",
            (f"{schema}.tasks",),
        ).fetchall()
    return {str(name): str(function) for name, function in rows}


@pytest.mark.citus
def test_the_due_at_evolution_over_a_distributed_schema_keeps_the_citus_history_function(
    committed: None,
) -> None:
    """The `due_at` evolution's revisions re-create the tasks history triggers (0007 and 0007c,
    each way): run by the migrator over a distributed schema as a fan-out runs them, every
    trigger keeps calling the Citus history function, and history written through the API
    after the contract records `due_at` on the worker."""
    from taskflow import due
    from tests.taskflow.test_due_switch import set_switch

    fixture = provisioned_tenant(Isolation.SCHEMA)
    schema = fixture.tenant.schema_name
    citus = dict.fromkeys(TASKS_HISTORY_TRIGGERS, CITUS_HISTORY_FUNCTION_NAME)
    try:
        with owner_connection() as conn:
            distributed = conn.execute(
                "SELECT count(*) FROM citus_schemas WHERE schema_name = %s::regnamespace",
                (schema,),
            ).fetchall()[0][0]
        assert distributed == 1
        assert history_functions(schema) == citus
        # Back below the expand (0007's downgrade), the expand again, then the contract.
        for revision in ("0006", "0008", "0007c"):
            outcome = migrate_schema(schema, revision=revision)
            assert outcome.ok, outcome.error
            assert history_functions(schema) == citus, revision
        set_switch(due.DUE_AT)
        api = fixture.api("admin")
        project = api.post("/api/v1/projects", {"key": "EVO", "name": "Evolution"}).json()
        created = api.post(
            "/api/v1/tasks",
            {"project_id": project["id"], "title": "t", "due_at": "2030-01-02T10:00:00Z"},
        )
        assert created.status_code == 201, created.content
        task = created.json()
        changed = api.patch(
            f"/api/v1/tasks/{task['id']}", {"due_at": "2030-01-04T08:00:00Z", "version": 1}
        )
        assert changed.status_code == 200, changed.content
        history = api.get(f"/api/v1/tasks/{task['id']}/history").json()["results"]
    finally:
        set_switch(None)
        discard(fixture)
    assert [entry["operation"] for entry in history] == ["insert", "update"]
    assert [entry["changes"].get("due_at") for entry in history] == [
        [None, "2030-01-02T10:00:00+00:00"],
        ["2030-01-02T10:00:00+00:00", "2030-01-04T08:00:00+00:00"],
    ]
    assert all("due_date" not in entry["changes"] for entry in history)


@pytest.mark.citus
def test_the_history_trigger_statement_keeps_the_citus_function_on_the_shared_schema() -> None:
    """The distributed shared tables' history triggers call the Citus function: the statement
    the evolution's revisions run (migrations_sqla.history_triggers) re-creates them, on every
    shard, still calling it, with the column list it is given."""
    columns = (*TASKS_AUDITED_NOW, "due_at")
    with owner_connection() as conn:
        assert history_functions(SHARED_SCHEMA) == dict.fromkeys(
            TASKS_HISTORY_TRIGGERS, CITUS_HISTORY_FUNCTION_NAME
        )
        definitions = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgrelid = 'shared.tasks'::regclass AND tgname LIKE 'tasks\\_history\\_%%'"
            )
        }
        with conn.transaction():
            conn.execute("SELECT set_config('search_path', 'shared, public', true)")
            conn.execute(CITUS_ALLOW_TRIGGERS)
            conn.execute(recreate_history_triggers("tasks", columns))
        after = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgrelid = 'shared.tasks'::regclass AND tgname LIKE 'tasks\\_history\\_%%'"
            )
        }
    assert history_functions(SHARED_SCHEMA) == dict.fromkeys(
        TASKS_HISTORY_TRIGGERS, CITUS_HISTORY_FUNCTION_NAME
    )
    assert after == definitions
