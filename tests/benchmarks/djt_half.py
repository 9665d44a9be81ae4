"""The django-tenants half of the onboarding benchmark; driven by `tests.benchmarks.bench_onboarding`.

Runs in its own process with DJANGO_SETTINGS_MODULE=tests.benchmarks.djt_settings, against its
own database, as the owner role (django-tenants creates the schema from Django's connection):

    python -m tests.benchmarks.djt_half

It migrates the public schema, then answers one JSON line on stdout per command line on stdin, so
the driver can interleave its tenants with the platform's (same load, same moment):

    ddl              {"sql": ...}   the benchmark app's migrations as SQL (`sqlmigrate`)
    tenant <slug>    {"save_ms": ..., "create_schema_ms": ...}
    objects <schema> {"tables": ..., "indexes": ..., "triggers": ..., "functions": ...}

`tenant` times `Tenant.save()` on a new Tenant with `auto_create_schema = True`: the row INSERT,
`CREATE SCHEMA` and `migrate_schemas` replaying the tenant apps' migrations (contenttypes,
taskflow, bench_taskflow) into it. Anything else Django prints goes to stderr.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any, TextIO

import django

OBJECT_COUNTS = """
SELECT count(*) FILTER (WHERE c.relkind = 'r'), count(*) FILTER (WHERE c.relkind = 'i'),
       (SELECT count(*) FROM pg_trigger t JOIN pg_class tc ON tc.oid = t.tgrelid
         WHERE tc.relnamespace = n.oid AND NOT t.tgisinternal),
       (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = %s GROUP BY n.oid
"""


def template_ddl() -> dict[str, Any]:
    """The benchmark app's migrations as the SQL that Django would run (`sqlmigrate`)."""
    from django.core.management import call_command
    from django.db import connection

    # The tenant router allows a tenant app's operations only while a tenant schema is active.
    connection.set_schema("t_sqlmigrate")  # type: ignore[attr-defined]
    try:
        parts = []
        for migration in ("0001", "0002"):
            out = io.StringIO()
            call_command("sqlmigrate", "bench_taskflow", migration, stdout=out, no_color=True)
            parts.append(out.getvalue())
    finally:
        connection.set_schema_to_public()  # type: ignore[attr-defined]
    return {"sql": "\n".join(parts)}


def schema_objects(schema: str) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(OBJECT_COUNTS, [schema])
        tables, indexes, triggers, functions = cursor.fetchone()
    return {"tables": tables, "indexes": indexes, "triggers": triggers, "functions": functions}


def create_tenant(slug: str) -> dict[str, Any]:
    from tenants.models import Isolation, Tenant, TenantStatus

    tenant = Tenant(
        name=f"DJT {slug}",
        slug=slug,
        schema_name=f"t_{slug}",
        isolation=Isolation.SCHEMA,
        status=TenantStatus.ACTIVE,
    )
    # django-tenants' own path; the platform's Tenant turns it off for its own provisioning.
    tenant.auto_create_schema = True
    timing: dict[str, float] = {}
    create_schema = tenant.create_schema

    def timed_create_schema(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return create_schema(*args, **kwargs)
        finally:
            timing["create_schema_ms"] = (time.perf_counter() - started) * 1000

    tenant.create_schema = timed_create_schema
    started = time.perf_counter()
    tenant.save(verbosity=0)
    return {"save_ms": (time.perf_counter() - started) * 1000, **timing}


def serve(commands: TextIO, replies: TextIO) -> None:
    from django.core.management import call_command

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in commands:
        command, _, arg = line.strip().partition(" ")
        if command == "ddl":
            reply = template_ddl()
        elif command == "tenant":
            reply = create_tenant(arg)
        elif command == "objects":
            reply = schema_objects(arg)
        else:
            raise SystemExit(f"unknown command {line!r}")
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    replies = sys.stdout
    sys.stdout = sys.stderr  # keep the protocol channel clean of anything Django prints
    django.setup()
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
