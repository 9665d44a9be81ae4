"""The Django side of a tenant schema's migration state (django_migrations, django_content_type).

django-tenants' migrate_schemas records every app's migrations in each tenant schema, but runs
operations only for TENANT_APPS; afterwards contenttypes adds rows for new models. So a tenant
whose only missing migrations belong to shared apps is brought level with the template by copying
the missing bookkeeping rows, set-based, inside the tenant's own transaction (`SYNC_SQL`).
Missing migrations of a tenant app have real operations: those run through migrate_schemas for
that one schema (`migrate_tenant_apps`), the heavy path, taken only when such a migration exists.
This module never decides which schemas to migrate: the migrator (migrations_sqla.migrator) does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from psycopg import sql

from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import use_owner_role_for_django
from tenants.provisioning import migrate_template_schema

# Run with the tenant schema first on the search_path; copies what the template has and it lacks.
SYNC_SQL = sql.SQL(
    "INSERT INTO django_migrations (app, name, applied)"
    " SELECT m.app, m.name, m.applied FROM {template}.django_migrations m"
    " WHERE NOT EXISTS (SELECT 1 FROM django_migrations x WHERE x.app = m.app AND x.name = m.name);"
    "INSERT INTO django_content_type (app_label, model)"
    " SELECT c.app_label, c.model FROM {template}.django_content_type c"
    " WHERE NOT EXISTS (SELECT 1 FROM django_content_type x"
    "                   WHERE x.app_label = c.app_label AND x.model = c.model);"
).format(template=sql.Identifier(TEMPLATE_SCHEMA))


@functools.cache
def tenant_app_labels() -> frozenset[str]:
    """Labels of TENANT_APPS: the apps whose migrations do something in a tenant schema."""
    labels = set()
    for config in apps.get_app_configs():
        if config.name in settings.TENANT_APPS:
            labels.add(config.label)
    return frozenset(labels)


@functools.cache
def code_leaf_migrations() -> frozenset[tuple[str, str]]:
    """The newest migration of every app, as the code on disk has them.

    Read once per process: building the loader's graph costs milliseconds of CPU, every run's
    template stage asks, and the code on disk changes only with a deploy, which restarts the
    worker."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes())


@contextmanager
def owner_role_for_django() -> Iterator[None]:
    """Django's connection as the owner for the block, then back to the process's own role.

    migrate_schemas runs on Django's connection; a worker must not keep the owner afterwards.
    """
    connection = connections["default"]
    saved = {k: connection.settings_dict[k] for k in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    use_owner_role_for_django()
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.set_schema_to_public()  # type: ignore[attr-defined]


def applied_migrations(conn: psycopg.Connection, schema: str) -> set[tuple[str, str]]:
    """The (app, name) rows of a schema's django_migrations; empty when it has none."""
    table = f'"{schema}".django_migrations'
    (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or (False,)
    if not exists:
        return set()
    rows = conn.execute(
        sql.SQL("SELECT app, name FROM {}.django_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {(app, name) for app, name in rows}


def behind_code(applied: set[tuple[str, str]]) -> bool:
    """Whether the code on disk has migrations a schema's `applied` rows lack."""
    return not code_leaf_migrations() <= applied


def migrate_template() -> None:
    """django-tenants' migrate_schemas for the template schema (made when missing)."""
    with owner_role_for_django():
        migrate_template_schema()


def migrate_tenant_apps(schema: str) -> None:
    """django-tenants' migrate_schemas for one tenant schema (tenant-app migrations pending)."""
    with owner_role_for_django():
        call_command(
            "migrate_schemas", tenant=True, schema_name=schema, interactive=False, verbosity=0
        )


def needs_tenant_app_migrations(
    template_applied: set[tuple[str, str]], tenant_applied: set[tuple[str, str]]
) -> bool:
    """True when a migration the tenant lacks belongs to a tenant app (real operations)."""
    labels = tenant_app_labels()
    return any(app in labels for app, _name in template_applied - tenant_applied)
