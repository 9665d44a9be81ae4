"""The one declaration of each resource's columns (taskflow.models) against what derives from it
and against what the database holds: a field left out of a history trigger fails here."""

from __future__ import annotations

from taskflow.imports.columns import FILE_COLUMNS
from taskflow.imports.writing import CONFLICT_KEY, ID_KEY
from taskflow.models import AUDITED, EVOLVING_AUDITED, Comment, Project, Task, columns_with
from taskflow.representations import COMMENT_FIELDS, PROJECT_FIELDS, TASK_FIELDS
from taskflow.serializers import ProjectCreate, ProjectPatch, TaskCreate, TaskPatch
from taskflow.services import PROJECT_WRITABLE, TASK_WRITABLE
from tenants.binding import binding_for
from tenants.database_roles import owner_connection
from tenants.placement import SHARED_SCHEMA
from tests.taskflow.conftest import TenantFixture

AUDITED_ENTITIES = (Project, Task, Comment)
OPERATIONS = ("insert", "update", "delete")

# The history triggers of a schema's tables: which table, which trigger, which arguments.
TRIGGER_ARGUMENTS = """
SELECT c.relname, t.tgname, t.tgnargs, t.tgargs
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND NOT t.tgisinternal AND t.tgname LIKE '%%\\_history\\_%%'
"""


def history_trigger_arguments(schema: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, trigger) -> the trigger's argument list, as pg_trigger holds it."""
    with owner_connection() as conn:
        rows = conn.execute(TRIGGER_ARGUMENTS, (schema,)).fetchall()
    return {
        (table, trigger): tuple(a.decode() for a in bytes(args).split(b"\0")[:count])
        for table, trigger, count, args in rows
    }


def expected_trigger_arguments() -> dict[tuple[str, str], tuple[str, ...]]:
    return {
        (entity.__tablename__, f"{entity.__tablename__}_history_{operation}"): (
            *columns_with(entity, AUDITED),
            *EVOLVING_AUDITED.get(entity.__tablename__, ()),
        )
        for entity in AUDITED_ENTITIES
        for operation in OPERATIONS
    }


def assert_triggers_record_the_audited_columns(schema: str) -> None:
    found = history_trigger_arguments(schema)
    expected = expected_trigger_arguments()
    assert found.keys() == expected.keys(), schema
    for key, columns in expected.items():
        recorded = set(found[key])
        assert set(columns) <= recorded, (
            f"{schema}.{key[1]} does not record {sorted(set(columns) - recorded)}, which"
            " taskflow.models declares AUDITED: a revision re-creates the history triggers"
            " with every audited column"
        )
        assert recorded <= set(columns), (
            f"{schema}.{key[1]} records {sorted(recorded - set(columns))}, which"
            " taskflow.models does not declare AUDITED"
        )


def test_history_triggers_of_a_migrated_schema_record_the_audited_columns(
    tenant_pair: tuple[TenantFixture, TenantFixture],
) -> None:
    """Runs for a schema-mode tenant's own schema and for the shared schema (rls mode)."""
    assert_triggers_record_the_audited_columns(binding_for(tenant_pair[0].tenant).schema)


def test_history_triggers_of_the_shared_schema_record_the_audited_columns() -> None:
    assert_triggers_record_the_audited_columns(SHARED_SCHEMA)


def test_every_audited_table_records_its_soft_delete() -> None:
    for entity in AUDITED_ENTITIES:
        assert "deleted_at" in columns_with(entity, AUDITED), entity.__tablename__


def test_representations_list_id_first_and_the_bookkeeping_last() -> None:
    assert PROJECT_FIELDS == (
        "id", "key", "name", "description", "created_at", "updated_at", "deleted_at", "version",
    )  # fmt: skip
    assert TASK_FIELDS == (
        "id", "project_id", "external_id", "title", "description", "status", "priority",
        "assignee_id", "due_at", "created_at", "updated_at", "deleted_at", "version",
    )  # fmt: skip
    assert COMMENT_FIELDS == (
        "id", "task_id", "author_id", "body", "created_at", "updated_at", "version",
    )  # fmt: skip


def test_the_api_accepts_exactly_the_writable_fields() -> None:
    assert set(ProjectCreate().fields) == PROJECT_WRITABLE
    assert set(ProjectPatch().fields) == PROJECT_WRITABLE | {"version"}
    assert set(TaskCreate().fields) == TASK_WRITABLE
    assert set(TaskPatch().fields) == TASK_WRITABLE | {"version"}


def test_every_writable_task_field_is_an_import_column() -> None:
    """And the task's id, which names the task a row updates (never written)."""
    targets = [c.target for c in FILE_COLUMNS]
    assert len(targets) == len(set(targets))
    # A file may say when a task is due either way while `tasks_due_at` evolves (taskflow.due).
    assert set(targets) == TASK_WRITABLE | {ID_KEY, "due_date"}
    assert CONFLICT_KEY in {c.name for c in FILE_COLUMNS}
