"""Contract of the `due_at` evolution, first step: the `due_date` indexes go, CONCURRENTLY.

Revision ID: 0007d
Revises: 0008
Create Date: 2026-12-06

Its own revision, and its own fan-out in the contract phase, because a migrator runs a plan's
transaction before its non-transactional steps: dropped here, concurrently and after nothing
else, no writer of a tenant's tasks (in the shared schema, every rls tenant's) waits for the
drop; 0007c then drops the column. The application stopped sorting by `due_date` at the
switch. Downgrade builds them again (in its transaction: an emergency path). Their names and
CASE sort keys are 0008's (its docstring says why; a schema contracted before 0008 existed has
the coalesce ones, gone the same way).
"""

from alembic import op

revision = "0007d"
down_revision = "0008"
branch_labels = None
depends_on = None
contract_step = True

non_transactional_upgrade = (
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_due_sort_live",
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_priority_due_sort_live",
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_due_live",
    "DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_priority_due_live",
)


def upgrade() -> None:
    pass


def downgrade() -> None:
    # In the transaction, not concurrently: a downgrade past 0007 drops them again in the same
    # plan, before any non-transactional step would have built them (an emergency path).
    op.execute(
        "CREATE INDEX IF NOT EXISTS tasks_due_sort_live ON tasks"
        " (tenant_id, (CASE WHEN due_date IS NULL THEN 'infinity'::date ELSE due_date END), id)"
        " WHERE deleted_at IS NULL"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS tasks_priority_due_sort_live ON tasks (tenant_id,"
        " priority DESC, (CASE WHEN due_date IS NULL THEN 'infinity'::date ELSE due_date END), id)"
        " WHERE deleted_at IS NULL"
    )
