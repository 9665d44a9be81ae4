"""Alembic environment for the `alembic` command line: one named schema per invocation."""

from __future__ import annotations

import os

from alembic import context

from migrations_sqla.runner import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    owner_engine,
    schema_transaction,
)

args = context.get_x_argument(as_dictionary=True)
schema = args.get("schema") or os.environ.get("TASKFLOW_SCHEMA", "template")

if context.is_offline_mode():
    raise SystemExit("offline mode is not supported: run against a database with -x schema=NAME")

with (
    owner_engine().connect() as connection,
    schema_transaction(
        connection,
        schema,
        lock_timeout=args.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
        statement_timeout=args.get("statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
    ),
):
    context.configure(connection=connection, version_table_schema=schema, transactional_ddl=True)
    context.run_migrations()
