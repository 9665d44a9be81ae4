"""History of imported rows (lean writes, migration 0003): the API serves the documented shape
{"col": [old, new]} whichever way a row was stored, before or after the migration, and the
migration goes down and up again with working triggers, in a schema and in the shared one."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from migrations_sqla.migrator import migrate_schema
from migrations_sqla.scripts import head_revision
from tenants.binding import binding_for
from tenants.database_roles import owner_connection
from tenants.models import Isolation
from tenants.placement import SHARED_SCHEMA
from tests.imports.conftest import (
    ImportTenant,
    csv_bytes,
    discard_with_uploads,
    tenant_with_project,
)

pytestmark = pytest.mark.worker

BEFORE = "0002"  # the revision before lean history writes
HEAD_FUNCTION = "taskflow_history_v3"  # what the history triggers call at the head (0005)
DUE_AT = "2030-01-02T00:00:00+00:00"  # due_date 2030-01-02 at 00:00 UTC, set by the sync trigger
COLUMNS = ("external_id", "project", "title", "description", "status", "priority", "due_date")


def history(tenant: ImportTenant, external_id: str) -> list[dict[str, Any]]:
    task_id = tenant.sql("SELECT id FROM tenant.tasks WHERE external_id = :e", e=external_id)[0][0]
    response = tenant.client("viewer").get(f"/api/v1/tasks/{task_id}/history")
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def stored(tenant: ImportTenant, external_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(operation, changes_format, changes) of a task's history rows, as stored."""
    rows = tenant.sql(
        "SELECT h.operation, h.changes_format, h.changes FROM tenant.tasks_history h"
        " JOIN tenant.tasks t ON t.id = h.row_id WHERE t.external_id = :e ORDER BY h.id",
        e=external_id,
    )
    return [tuple(r) for r in rows]


def project_id(tenant: ImportTenant) -> int:
    return int(tenant.sql("SELECT id FROM tenant.projects WHERE key = 'P1'")[0][0])


def migrate(schema: str, revision: str) -> None:
    outcome = migrate_schema(schema, revision=revision)
    assert outcome.ok, outcome.error


def history_function(schema: str) -> set[str]:
    """The functions the history triggers of `schema`'s tasks table call."""
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE t.tgrelid = format('%%I.tasks', %s::text)::regclass AND NOT t.tgisinternal"
            " AND t.tgname LIKE 'tasks\\_history\\_%%'",
            (schema,),
        ).fetchall()
    return {r[0] for r in rows}


def history_keys(schema: str) -> dict[str, str]:
    """Index name -> definition of `schema`'s tasks_history."""
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
            " AND tablename = 'tasks_history'",
            (schema,),
        ).fetchall()
    return {r[0]: r[1].split(" USING btree ")[1] for r in rows}


def test_imported_new_rows_and_updates_show_the_documented_history(
    import_tenant: ImportTenant, worker: object
) -> None:
    first = import_tenant.import_and_wait(
        csv_bytes(
            [
                ("EXT-1", "P1", "One", "", "todo", "3", "2030-01-02"),
                ("EXT-2", "P1", "Two", "Second", "done", "0", ""),
            ],
            header=COLUMNS,
        )
    )
    assert first["inserted"] == 2, first
    second = import_tenant.import_and_wait(
        csv_bytes([("EXT-1", "P1", "One renamed", "", "in_progress", "3", "2030-01-02")], COLUMNS)
    )
    assert second["updated"] == 1, second
    project = project_id(import_tenant)

    one = history(import_tenant, "EXT-1")
    assert [e["operation"] for e in one] == ["insert", "update"]
    assert [e["version"] for e in one] == [1, 2]
    assert one[0]["changes"] == {
        "project_id": [None, project],
        "external_id": [None, "EXT-1"],
        "title": [None, "One"],
        "description": [None, ""],
        "status": [None, "todo"],
        "priority": [None, 3],
        "due_at": [None, DUE_AT],  # the newest API version's name (recorded as both)
    }
    assert one[1]["changes"] == {"title": ["One", "One renamed"], "status": ["todo", "in_progress"]}
    # Each row names the request that uploaded its import (a generated id: none was sent).
    ids = [e["request_id"] for e in one]
    assert len(set(ids)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert [e["actor_id"] for e in one] == [import_tenant.fixture.user_ids["member"]] * 2
    # Columns that are null (no assignee, no due date, not deleted) are absent, as documented.
    two = history(import_tenant, "EXT-2")
    assert two[0]["changes"] == {
        "project_id": [None, project],
        "external_id": [None, "EXT-2"],
        "title": [None, "Two"],
        "description": [None, "Second"],
        "status": [None, "done"],
        "priority": [None, 0],
    }
    # Stored lean: the insert once, flat; the update as pairs of the changed columns only.
    # While tasks_due_at evolves both due columns are recorded; the API shows due_at.
    assert stored(import_tenant, "EXT-1") == [
        (
            "insert",
            2,
            {**{k: v[1] for k, v in one[0]["changes"].items()}, "due_date": "2030-01-02"},
        ),
        ("update", 1, one[1]["changes"]),
    ]


@pytest.fixture
def lone_schema_tenant(committed: None) -> Iterator[ImportTenant]:
    """A schema-mode tenant whose schema the test migrates down and up (its own, so no other
    test sees it at another revision)."""
    tenant = tenant_with_project(Isolation.SCHEMA)
    yield tenant
    migrate(binding_for(tenant.fixture.tenant).schema, head_revision())
    discard_with_uploads(tenant)


def write_at_old_revision(tenant: ImportTenant, schema: str, external_id: str) -> None:
    """Insert and update a task with plain SQL while the schema is at the revision before."""
    with owner_connection() as conn:
        conn.execute(f'SET LOCAL search_path = "{schema}"')
        # Row-level security is forced at the head, for the owner too.
        conn.execute(
            "SELECT set_config('app.tenant_id', %s, true)", (str(tenant.fixture.tenant.pk),)
        )
        conn.execute(
            "INSERT INTO tasks (tenant_id, project_id, external_id, title, status, priority)"
            " SELECT tenant_id, id, %s, 'Old', 'todo', 1 FROM projects WHERE key = 'P1'",
            (external_id,),
        )
        conn.execute(
            "UPDATE tasks SET title = 'Old renamed', version = version + 1 WHERE external_id = %s",
            (external_id,),
        )


def test_history_written_before_the_migration_reads_the_same_after_it_and_down_and_up_again(
    lone_schema_tenant: ImportTenant, worker: object
) -> None:
    tenant = lone_schema_tenant
    schema = binding_for(tenant.fixture.tenant).schema
    assert history_function(schema) == {HEAD_FUNCTION}
    assert history_keys(schema) == {"tasks_history_pkey": "(tenant_id, row_id, id)"}

    migrate(schema, BEFORE)
    assert history_function(schema) == {"taskflow_history"}
    write_at_old_revision(tenant, schema, "OLD-1")
    migrate(schema, head_revision())

    # The same values written by the old function (pairs) and by the new one (flat) read alike.
    write_at_old_revision(tenant, schema, "NEW-1")
    old, new = history(tenant, "OLD-1"), history(tenant, "NEW-1")
    project = project_id(tenant)
    for entries, external_id in ((old, "OLD-1"), (new, "NEW-1")):
        assert [e["operation"] for e in entries] == ["insert", "update"]
        assert entries[0]["changes"] == {
            "project_id": [None, project],
            "external_id": [None, external_id],
            "title": [None, "Old"],
            "description": [None, ""],
            "status": [None, "todo"],
            "priority": [None, 1],
        }
        assert entries[1]["changes"] == {"title": ["Old", "Old renamed"]}
    assert [(op, f) for op, f, _ in stored(tenant, "OLD-1")] == [("insert", 1), ("update", 1)]
    assert [(op, f) for op, f, _ in stored(tenant, "NEW-1")] == [("insert", 2), ("update", 1)]

    # Down: flat rows are rewritten into pairs, the old keys are back, the old triggers write.
    migrate(schema, BEFORE)
    assert history_function(schema) == {"taskflow_history"}
    assert history_keys(schema) == {
        "tasks_history_pkey": "(id)",
        "tasks_history_row": "(tenant_id, row_id, id)",
    }
    write_at_old_revision(tenant, schema, "DOWN-1")
    with owner_connection() as conn:
        rows = conn.execute(
            f'SELECT t.external_id, h.operation, h.changes FROM "{schema}".tasks_history h'
            f' JOIN "{schema}".tasks t ON t.id = h.row_id ORDER BY h.id'
        ).fetchall()
    inserts = {e: c for e, op, c in rows if op == "insert"}
    assert inserts["NEW-1"] == new[0]["changes"]
    assert inserts["DOWN-1"] == {**new[0]["changes"], "external_id": [None, "DOWN-1"]}
    assert [op for e, op, _ in rows if e == "DOWN-1"] == ["insert", "update"]

    # Up again: the existing functions are reused, the triggers write lean again.
    migrate(schema, head_revision())
    assert history_function(schema) == {HEAD_FUNCTION}
    imported = tenant.import_and_wait(
        csv_bytes([("UP-1", "P1", "Up", "", "todo", "1", "")], COLUMNS)
    )
    assert imported["inserted"] == 1, imported
    assert history(tenant, "UP-1")[0]["changes"]["title"] == [None, "Up"]
    assert history(tenant, "DOWN-1")[0]["changes"] == inserts["DOWN-1"]


@pytest.mark.empty_shared_schema
def test_shared_schema_goes_down_and_up_with_every_rls_tenants_history(
    committed: None, worker: object
) -> None:
    # Below 0006 ids are unique across a schema again: these tenants' ids (each from its own
    # sequence) are kept apart from each other's and from other tenants' in the shared schema.
    tenants = [tenant_with_project(Isolation.RLS, ids_after=n * 10**12) for n in (1, 2)]
    try:
        for tenant in tenants:
            job = tenant.import_and_wait(
                csv_bytes([("EXT-1", "P1", "One", "", "todo", "3", "")], COLUMNS)
            )
            assert job["inserted"] == 1, job
        expected = [history(t, "EXT-1")[0]["changes"] for t in tenants]
        migrate(SHARED_SCHEMA, BEFORE)
        try:
            # Row-level security is forced for the owner too: each tenant's rows were rewritten.
            for tenant, changes in zip(tenants, expected, strict=True):
                rows = tenant.sql(
                    "SELECT h.changes FROM tenant.tasks_history h JOIN tenant.tasks t"
                    " ON t.id = h.row_id WHERE t.external_id = 'EXT-1'"
                )
                assert [r[0] for r in rows] == [changes]
            with owner_connection() as conn:
                forced = conn.execute(
                    "SELECT bool_and(relforcerowsecurity) FROM pg_class"
                    " WHERE relnamespace = 'shared'::regnamespace AND relname LIKE '%%_history'"
                ).fetchone()
            assert forced == (True,)
        finally:
            migrate(SHARED_SCHEMA, head_revision())
        assert history_function(SHARED_SCHEMA) == {HEAD_FUNCTION}
        for tenant, changes in zip(tenants, expected, strict=True):
            assert history(tenant, "EXT-1")[0]["changes"] == changes
    finally:
        for tenant in tenants:
            discard_with_uploads(tenant)


def test_history_rows_need_their_tenant_and_row_in_the_key(import_tenant: ImportTenant) -> None:
    """One index per history table: the primary key leads with (tenant_id, row_id)."""
    schema = binding_for(import_tenant.fixture.tenant).schema
    assert history_keys(schema) == {"tasks_history_pkey": "(tenant_id, row_id, id)"}
    wait_until_no_snapshot_predates(f'"{schema}".tasks_history_pkey')
    with owner_connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            f'EXPLAIN SELECT * FROM "{schema}".tasks_history'
            " WHERE tenant_id = 1 AND row_id = 2 ORDER BY id LIMIT 5"
        ).fetchall()
    assert "tasks_history_pkey" in " ".join(r[0] for r in plan)


def wait_until_no_snapshot_predates(index: str, timeout_s: float = 30.0) -> None:
    """An index built over broken HOT chains (pg_index.indcheckxmin, as a migration down and up
    leaves it) is hidden from every snapshot whose xmin is older than the index; the planner then
    cannot choose it while any such transaction is open. Wait for those to end, and name them if
    they outlive the wait: a transaction left open that long is a bug of its own."""
    holders = (
        "SELECT a.pid, a.state, a.xact_start, left(a.query, 120) FROM pg_stat_activity a,"
        " pg_index i WHERE i.indexrelid = %s::regclass AND i.indcheckxmin"
        " AND a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()"
        " AND age(a.backend_xmin) >= age(i.xmin)"
    )
    deadline = time.monotonic() + timeout_s
    while True:
        with owner_connection(autocommit=True) as conn:
            rows = conn.execute(holders, (index,)).fetchall()
        if not rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not rows, f"transactions older than {index} still open: {rows}"
