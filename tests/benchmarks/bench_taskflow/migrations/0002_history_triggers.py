"""Statement-level history triggers (transition tables), as in the TaskFlow Alembic migration.

One trigger per operation per audited table; the trigger function lives in public, is created by
the first schema migrated, and serves every schema (it writes to TG_TABLE_SCHEMA's history table).
"""

from django.db import migrations

FUNCTION = r"""
DO $do$ BEGIN IF to_regprocedure('public.bench_history()') IS NULL THEN EXECUTE $body$
CREATE FUNCTION public.bench_history() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  history text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_history');
  actor bigint := nullif(current_setting('app.actor_id', true), '')::bigint;
  request text := nullif(current_setting('app.request_id', true), '');
  changes text;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT string_agg(format('%L, jsonb_build_array(NULL, to_jsonb(n.%I))', c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format('INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id,'
      ' request_id) SELECT n.tenant_id, n.id, ''insert'', n.version,'
      ' jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2 FROM new_rows n', history, changes)
      USING actor, request;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT string_agg(format('%L, CASE WHEN o.%I IS DISTINCT FROM n.%I THEN'
      ' jsonb_build_array(to_jsonb(o.%I), to_jsonb(n.%I)) END', c, c, c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format('INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id,'
      ' request_id) SELECT n.tenant_id, n.id, ''update'', n.version,'
      ' jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2'
      ' FROM old_rows o JOIN new_rows n ON n.id = o.id', history, changes) USING actor, request;
  ELSE
    SELECT string_agg(format('%L, jsonb_build_array(to_jsonb(o.%I), NULL)', c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format('INSERT INTO %s (tenant_id, row_id, operation, version, changes, actor_id,'
      ' request_id) SELECT o.tenant_id, o.id, ''delete'', o.version,'
      ' jsonb_strip_nulls(jsonb_build_object(%s)), $1, $2 FROM old_rows o', history, changes)
      USING actor, request;
  END IF;
  RETURN NULL;
END
$fn$;
$body$; END IF; END $do$
"""

TRIGGERS = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
}
AUDITED = {
    "projects": ("key", "name", "description", "deleted_at"),
    "tasks": (
        "project_id", "external_id", "title", "description", "status", "priority",
        "assignee_id", "due_date", "deleted_at",
    ),
    "comments": ("task_id", "author_id", "body", "deleted_at"),
}  # fmt: skip

OPERATIONS = [migrations.RunSQL(FUNCTION, migrations.RunSQL.noop)]
for table, columns in AUDITED.items():
    arguments = ", ".join(f"'{c}'" for c in columns)
    for event, referencing in TRIGGERS.items():
        name = f"{table}_history_{event.lower()}"
        OPERATIONS.append(
            migrations.RunSQL(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} {referencing}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION public.bench_history({arguments})",
                f"DROP TRIGGER {name} ON {table}",
            )
        )


class Migration(migrations.Migration):
    dependencies = [("bench_taskflow", "0001_initial")]
    operations = OPERATIONS
