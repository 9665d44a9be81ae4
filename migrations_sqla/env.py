"""Alembic environment for the `alembic` command line: one named schema per invocation.

The command runs through the per-schema migrator (migrations_sqla.migrator), as the fan-out and
setup_platform do: the same advisory lock, timeouts, guard and non-transactional steps.
"""

from __future__ import annotations

import os
from pathlib import Path

import django
from alembic import context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control_plane.settings")
django.setup()

from migrations_sqla import scripts  # noqa: E402 - Django is set up first
from migrations_sqla.migrator import (  # noqa: E402
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    SchemaMigrator,
    Target,
    owner_engine,
)

args = context.get_x_argument(as_dictionary=True)
schema = args.get("schema") or os.environ.get("TASKFLOW_SCHEMA", "template")

if context.is_offline_mode():
    raise SystemExit("offline mode is not supported: run against a database with -x schema=NAME")

# "" is migrations_sqla's own script directory (cached per process); another names its folder.
folder = Path(context.script.dir).resolve()
target = Target(
    alembic=None,
    django=None,
    location="" if folder == scripts.HERE else str(folder),
    lock_timeout=args.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
    statement_timeout=args.get("statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
)
with owner_engine().connect() as connection:
    SchemaMigrator(connection, target).run_alembic(schema, context)
