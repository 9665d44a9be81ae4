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

The migration lint (squawk, `python -m migrations_sqla.lint`, part of `platform/dev.sh test`)
reads this revision's upgrade SQL as the migrator runs it (in its transaction, with its
timeouts). A column becomes NOT NULL in two revisions: one adds `CHECK (col IS NOT NULL) NOT
VALID`, the next runs `VALIDATE CONSTRAINT` (a scan that blocks no writes) then `SET NOT NULL`
(which the valid constraint spares its scan). Renaming, retyping or dropping a column breaks the
code still running, so only the contract phase of an expand -> contract evolution may do it,
and says so:

    contract_step = True

A finding that must stay is accepted by name in migrations_sqla/squawk_exceptions.toml.
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
