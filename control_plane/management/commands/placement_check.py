"""`manage.py placement_check [SCHEMA ...] [--strict]`: what would block distribution on Citus.

Lists, one per line, what in the catalog of each schema (default: the template, which every
tenant schema is cloned from, and the shared schema) would stop `citus_schema_distribute` or
`create_distributed_table(..., 'tenant_id')`: triggers, keys and foreign keys without `tenant_id`,
foreign keys that leave the schema, tables without `tenant_id` in the shared schema; tables whose
row-level security is not forced (a node move killed before it forced it again: the next move and
beat repair it, tenants.row_security); then each migration step that sends several statements in
one string (refused on a distributed schema). Read-only. With --strict it exits non-zero when anything is listed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from migrations_sqla.scripts import default_location, multi_statement_executions
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.distribution import distribution_blockers
from tenants.placement import SHARED_SCHEMA
from tenants.row_security import unforced_tables


class Command(BaseCommand):
    help = "List what in the catalog and the migrations would block distribution on Citus."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schemas", nargs="*", default=[TEMPLATE_SCHEMA, SHARED_SCHEMA])
        parser.add_argument("--strict", action="store_true", help="exit 1 if anything is listed")

    def handle(self, *args: Any, **options: Any) -> None:
        found = 0
        with owner_connection() as conn:
            for schema in options["schemas"]:
                exists = conn.execute(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone()
                if not exists or not exists[0]:
                    raise CommandError(f"no schema {schema!r}")
                for blocker in distribution_blockers(conn, schema):
                    self.stdout.write(blocker.line())
                    found += 1
                for table in unforced_tables(conn, schema).get(schema, []):
                    self.stdout.write(
                        f"{schema}.{table}\tno_force\t{table}\trow-level security not forced"
                    )
                    found += 1
        for step in multi_statement_executions(default_location()):
            self.stdout.write(
                f"revision {step.revision}\t{step.direction}\tmulti_statement"
                f"\t{step.statements} statements in one string: {step.start}"
            )
            found += 1
        self.stdout.write(f"{found} finding(s)")
        if found and options["strict"]:
            raise CommandError(f"{found} thing(s) would block distribution on Citus")
