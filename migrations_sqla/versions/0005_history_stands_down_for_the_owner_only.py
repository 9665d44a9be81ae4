"""History cannot be switched off by the app role: only the tables' owner may copy without it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

`public.taskflow_history_v2()` (0003) stands down whenever `app.copying_tenant` is 'on', and any
role can set a custom setting: the app role could update a task and leave no history. Moves set
it as the owner role (tenants.moving), so the new `public.taskflow_history_v3()` stands down only
when the role running the statement is (a member of) the audited table's owner; for the app role
the setting changes nothing. The catalog lookup runs only when the setting is on.

A shared function in public is never changed in place (schemas migrate one at a time), so v3 is
created once, race-safely, and this revision re-points the schema's own history triggers from v2
to v3, keeping each trigger's definition (events, transition tables, audited columns) as the
catalog holds it. Downgrade re-points them back and leaves v3 for other schemas.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Same contract and body as public.taskflow_history_v2() (0003) but for who may stand it down.
HISTORY_FUNCTION_V3 = r"""
CREATE FUNCTION public.taskflow_history_v3() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  history text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_history');
  actor bigint := nullif(current_setting('app.actor_id', true), '')::bigint;
  request text := nullif(current_setting('app.request_id', true), '');
  changes text;
BEGIN
  -- A tenant being moved between placements copies its history as it is, without adding to it:
  -- only the tables' owner (the role moves run as) may ask for that; the app role never can.
  IF current_setting('app.copying_tenant', true) = 'on' THEN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
      RETURN NULL;
    END IF;
  END IF;
  IF TG_OP = 'INSERT' THEN
    -- changes_format 2: the new values once, {"col": new}, non-null columns only.
    SELECT string_agg(format('%L, n.%I', c, c), ', ') INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT n.tenant_id, n.id, ''insert'', n.version, jsonb_strip_nulls(jsonb_build_object(%s)), 2, $1, $2
       FROM new_rows n', history, changes) USING actor, request;
  ELSIF TG_OP = 'UPDATE' THEN
    -- changes_format 1: {"col": [old, new]}, built for the changed columns only.
    SELECT string_agg(format('CASE WHEN o.%I IS DISTINCT FROM n.%I THEN jsonb_build_object(%L, jsonb_build_array(o.%I, n.%I)) ELSE ''{}''::jsonb END', c, c, c, c, c), ' || ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT n.tenant_id, n.id,
              CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN ''soft_delete''
                   WHEN o.deleted_at IS NOT NULL AND n.deleted_at IS NULL THEN ''restore''
                   ELSE ''update'' END,
              n.version, %s, 1, $1, $2
       FROM old_rows o JOIN new_rows n ON n.id = o.id', history, changes) USING actor, request;
  ELSE
    -- changes_format 1: {"col": [old, null]}, non-null columns only.
    SELECT string_agg(format('%L, CASE WHEN o.%I IS NOT NULL THEN jsonb_build_array(o.%I, NULL) END', c, c, c), ', ')
      INTO changes FROM unnest(TG_ARGV) AS c;
    EXECUTE format(
      'INSERT INTO %s (tenant_id, row_id, operation, version, changes, changes_format, actor_id, request_id)
       SELECT o.tenant_id, o.id, ''delete'', o.version, jsonb_strip_nulls(jsonb_build_object(%s)), 1, $1, $2
       FROM old_rows o', history, changes) USING actor, request;
  END IF;
  RETURN NULL;
END
$fn$;
"""

# Each history trigger of the schema that calls `{old}` is re-created calling `{new}`, from its
# own definition: the audited columns stay exactly what the schema's triggers record.
REPOINT = """
DO $repoint$ DECLARE t record; BEGIN
  FOR t IN
    SELECT tg.tgname, c.relname, pg_get_triggerdef(tg.oid) AS definition
    FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
    WHERE c.relnamespace = current_schema()::regnamespace AND NOT tg.tgisinternal
      AND tg.tgfoid = 'public.{old}()'::regprocedure
    ORDER BY c.relname, tg.tgname
  LOOP
    EXECUTE format('DROP TRIGGER %I ON %I', t.tgname, t.relname);
    EXECUTE replace(t.definition, '{old}(', '{new}(');
  END LOOP;
END $repoint$
"""


def upgrade() -> None:
    # Created once (by the template, which every fan-out migrates first); later schemas skip it,
    # so concurrent tenant migrations never race to replace a function others use.
    op.execute(
        "DO $do$ BEGIN IF to_regprocedure('public.taskflow_history_v3()') IS NULL THEN "
        + "EXECUTE "
        + "$body$"
        + HISTORY_FUNCTION_V3
        + "$body$"
        + "; END IF; END $do$"
    )
    op.execute(REPOINT.format(old="taskflow_history_v2", new="taskflow_history_v3"))


def downgrade() -> None:
    op.execute(REPOINT.format(old="taskflow_history_v3", new="taskflow_history_v2"))
