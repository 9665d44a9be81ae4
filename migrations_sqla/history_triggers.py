"""The SQL a revision runs to re-create a table's statement-level history triggers.

A revision re-creates a table's history triggers when it changes what they record (their
column list). The function they call is not the revision's to choose: on a Citus distributed
schema, and on the distributed shared tables, tenants.distribution pointed them at
`public.taskflow_history_citus_v1()`, which finds the worker's history shard, and a revision
that named `public.taskflow_history_v3()` would undo that (history would then fail on the
workers). So each trigger is re-created with the function it calls now, read from pg_trigger
inside the migration's transaction (under its lock), in one DO statement: one statement, so
Citus takes it on a distributed schema, and the same SQL for every schema (the table resolves
through the migration's search_path), so a plan is still compiled once. The function a revision
names is used only for a trigger that does not exist yet.

Never imports Django or the database: it only writes SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

# The history function of a schema that no distribution has re-pointed (0005).
HISTORY_FUNCTION = "public.taskflow_history_v3"

# Each history trigger: its name's suffix, its event and its transition tables.
EVENTS = (
    ("insert", "INSERT", "REFERENCING NEW TABLE AS new_rows"),
    ("update", "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("delete", "DELETE", "REFERENCING OLD TABLE AS old_rows"),
)

RECREATE = """DO $history$
DECLARE
  spec record;
  kept text;
BEGIN
  FOR spec IN SELECT * FROM (VALUES {events}) AS s (name, event, transition) LOOP
    kept := NULL;
    SELECT format('%I.%I', pn.nspname, p.proname) INTO kept
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    JOIN pg_namespace pn ON pn.oid = p.pronamespace
    WHERE tg.tgrelid = '{table}'::regclass AND tg.tgname = spec.name;
    IF kept IS NOT NULL THEN
      EXECUTE format('DROP TRIGGER %I ON {table}', spec.name);
    END IF;
    EXECUTE format(
      'CREATE TRIGGER %I AFTER %s ON {table} %s FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
      spec.name, spec.event, spec.transition, coalesce(kept, '{function}'), {arguments});
  END LOOP;
END
$history$"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def recreate_history_triggers(
    table: str, columns: Sequence[str], *, function: str = HISTORY_FUNCTION
) -> str:
    """One DO statement that re-creates `table`'s three history triggers (`<table>_history_
    insert|update|delete`) recording `columns`, each calling the function it calls now
    (`function` for one that is missing)."""
    if not table.isidentifier() or not all(c.isidentifier() for c in columns):
        raise ValueError(f"not plain identifiers: {table!r}, {columns!r}")
    events = ", ".join(
        f"({_literal(f'{table}_history_{suffix}')}, {_literal(event)}, {_literal(transition)})"
        for suffix, event, transition in EVENTS
    )
    arguments = ", ".join(f"'{column}'" for column in columns)
    return RECREATE.format(
        events=events, table=table, function=function, arguments=_literal(arguments)
    )
