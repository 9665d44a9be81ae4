"""An index for the sort `-priority,due_date` (and its reverse), the list's mixed-direction sort.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

A keyset page in a mixed-direction order is read as one ordered range scan per run of keys with
the same direction (taskflow.pagination), and each scan needs an index in exactly that order;
B-tree indexes scan backwards, so this one serves `priority,-due_date` too. Built inside the
migration's transaction: the fan-out migrates one schema per transaction, so writes to that
schema's tasks wait for the build (seconds for a million rows; in the shared schema, every rls
tenant's writes do).
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX tasks_priority_due_live ON tasks"
        " (tenant_id, priority DESC, coalesce(due_date, 'infinity'::date), id)"
        " WHERE deleted_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX tasks_priority_due_live")
