"""Expand of the `due_at` evolution: tasks get a nullable `due_at` kept in step with `due_date`.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06

`tasks.due_date` (date) becomes `tasks.due_at` (timestamptz) by expand -> backfill -> switch ->
contract (control_plane.evolution). This revision is the expand: old code (writing `due_date`)
and new code (writing `due_at`) run side by side against it, so

- `due_at` is added nullable (a catalog change, no rewrite);
- a BEFORE row trigger, `public.taskflow_tasks_due_sync_v1()`, keeps the two in step whichever
  one a writer set: a changed `due_at` sets `due_date` to its UTC date; a changed `due_date`
  sets `due_at` to 00:00 UTC of that day (a date written by an old client means midnight UTC);
  on insert, `due_at` wins when both are given. A `due_date` written with the date `due_at`
  already has leaves the time alone, so an old client's PATCH of other fields keeps the time;
- the tasks' history triggers record `due_at` too (their column list gains it), each keeping
  the function it calls (migrations_sqla.history_triggers: the Citus one on a distributed schema);
- the indexes that sort by `due_date` get `due_at` twins, built CONCURRENTLY after the commit
  (declared non-transactional steps, retried on lock timeouts, rebuilt when left invalid).

`BACKFILL` declares the backfill phase's batched UPDATE (migrations_sqla.backfill): rows whose
`due_at` is still empty although `due_date` is set.

The trigger function lives in public and is created once, race-safely (schemas migrate one at a
time); downgrade removes this schema's trigger, indexes and column and leaves the function.
"""

from alembic import op

from migrations_sqla.backfill import Backfill
from migrations_sqla.history_triggers import recreate_history_triggers

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TASKS_AUDITED = (
    "project_id", "external_id", "title", "description", "status", "priority",
    "assignee_id", "due_date", "deleted_at",
)  # fmt: skip

DUE_SYNC_FUNCTION = r"""
CREATE FUNCTION public.taskflow_tasks_due_sync_v1() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.due_at IS NOT NULL THEN
      NEW.due_date := (NEW.due_at AT TIME ZONE 'UTC')::date;
    ELSIF NEW.due_date IS NOT NULL THEN
      NEW.due_at := NEW.due_date::timestamp AT TIME ZONE 'UTC';
    END IF;
  ELSIF NEW.due_at IS DISTINCT FROM OLD.due_at THEN
    NEW.due_date := (NEW.due_at AT TIME ZONE 'UTC')::date;
  ELSIF NEW.due_date IS DISTINCT FROM OLD.due_date THEN
    NEW.due_at := NEW.due_date::timestamp AT TIME ZONE 'UTC';
  ELSIF NEW.due_at IS NULL AND NEW.due_date IS NOT NULL THEN
    NEW.due_at := NEW.due_date::timestamp AT TIME ZONE 'UTC';  -- the backfill's own UPDATE
  END IF;
  RETURN NEW;
END
$fn$;
"""

non_transactional_upgrade = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_due_at_live ON {schema}.tasks"
    " (tenant_id, coalesce(due_at, 'infinity'::timestamptz), id) WHERE deleted_at IS NULL",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_priority_due_at_live ON {schema}.tasks"
    " (tenant_id, priority DESC, coalesce(due_at, 'infinity'::timestamptz), id)"
    " WHERE deleted_at IS NULL",
)
non_transactional_downgrade = (
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_due_at_live",
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_priority_due_at_live",
)

BACKFILL = Backfill(
    table="tasks",
    assign="due_at = due_date::timestamp AT TIME ZONE 'UTC'",
    pending="due_at IS NULL AND due_date IS NOT NULL",
)


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS due_at timestamptz")
    op.execute(
        "DO $do$ BEGIN IF to_regprocedure('public.taskflow_tasks_due_sync_v1()') IS NULL THEN "
        + "EXECUTE "
        + "$body$"
        + DUE_SYNC_FUNCTION
        + "$body$"
        + "; END IF; END $do$"
    )
    op.execute(
        "CREATE TRIGGER tasks_due_sync BEFORE INSERT OR UPDATE ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION public.taskflow_tasks_due_sync_v1()"
    )
    op.execute(recreate_history_triggers("tasks", (*TASKS_AUDITED, "due_at")))


def downgrade() -> None:
    op.execute(recreate_history_triggers("tasks", TASKS_AUDITED))
    op.execute("DROP TRIGGER tasks_due_sync ON tasks")
    # One index a statement: Citus refuses to drop several distributed objects in one.
    op.execute("DROP INDEX IF EXISTS tasks_due_at_live")
    op.execute("DROP INDEX IF EXISTS tasks_priority_due_at_live")
    op.execute("ALTER TABLE tasks DROP COLUMN due_at")
