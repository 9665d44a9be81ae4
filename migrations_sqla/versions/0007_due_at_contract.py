"""Contract of the `due_at` evolution: `due_date`, its sync trigger and its indexes go.

Revision ID: 0007c
Revises: 0007d
Create Date: 2026-12-06

Applied only by the evolution's contract phase (control_plane.evolution), once every schema is
past the backfill, the application reads `due_at` everywhere and no old code remains: a
contract step is never part of "head" for an ordinary run (migrations_sqla.scripts). The
history triggers stop recording `due_date`; rows written before keep it in `changes` and read
as they always did. The two indexes on `due_date` were dropped CONCURRENTLY by 0007d, the
contract's first fan-out, so no writer waited for them; the column drop is a catalog change.
Downgrade puts the column back and refills it from `due_at` in the same transaction (a contract
is undone only in an emergency), with the trigger and the history column list (0007d's downgrade
builds the indexes).
"""

from alembic import op

from migrations_sqla.history_triggers import recreate_history_triggers

revision = "0007c"
down_revision = "0007d"
branch_labels = None
depends_on = None
contract_step = True

TASKS_AUDITED = (
    "project_id", "external_id", "title", "description", "status", "priority",
    "assignee_id", "deleted_at", "due_at",
)  # fmt: skip


def upgrade() -> None:
    op.execute("DROP TRIGGER tasks_due_sync ON tasks")
    op.execute(recreate_history_triggers("tasks", TASKS_AUDITED))
    op.execute("ALTER TABLE tasks DROP COLUMN due_date")


def downgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN due_date date")
    # Every tenant's rows (row-level security is forced, for the owner too), without history:
    # the refill changes no value a client wrote.
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute("SELECT set_config('app.copying_tenant', 'on', true)")
    op.execute(
        "UPDATE tasks SET due_date = (due_at AT TIME ZONE 'UTC')::date WHERE due_at IS NOT NULL"
    )
    op.execute("SELECT set_config('app.copying_tenant', '', true)")
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE TRIGGER tasks_due_sync BEFORE INSERT OR UPDATE ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION public.taskflow_tasks_due_sync_v1()"
    )
    op.execute(
        recreate_history_triggers("tasks", (*TASKS_AUDITED[:7], "due_date", "deleted_at", "due_at"))
    )
