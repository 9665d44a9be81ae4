"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Runs with search_path set (transaction-locally) to the schema being migrated: write table
names without a schema. An index on a table that may be large is built without blocking writes
by declaring it instead of creating it in upgrade(): statements that run in autocommit after
the commit (migrate_schema and the fan-out alike), idempotent, with a {schema} placeholder:

    non_transactional_upgrade = (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_x ON {schema}.tasks (x)",
    )
    non_transactional_downgrade = ("DROP INDEX CONCURRENTLY IF EXISTS {schema}.tasks_x",)
"""

from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
