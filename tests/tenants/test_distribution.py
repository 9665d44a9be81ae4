"""The placement check: what in the catalog would block distribution on a Citus cluster."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.distribution import distribution_blockers
from tenants.placement import SHARED_SCHEMA

# Statement-level history triggers with transition tables, and the due_at sync: known blockers
# until a Citus-mode history function exists (README, "Citus").
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
