"""Spare schemas: template clones made ahead of time, so onboarding renames instead of cloning.

Cloning costs tens of milliseconds of catalog writes per schema; renaming a ready clone costs
about one. Spares are made by a worker (after each onboarding and on a beat schedule) and only
a spare of the template's current revision is ever handed out: after a migration fan-out the
old ones are dropped and new ones cloned.
"""

from __future__ import annotations

import secrets

import psycopg
from django.conf import settings
from psycopg import sql
from psycopg.types.json import Jsonb

from tenants.cloning import TEMPLATE_SCHEMA, clone_schema, fingerprint_of, fingerprint_sql
from tenants.models import SpareSchema
from tenants.roles import app_role_name, owner_connection

SPARE_PREFIX = "t__spare_"  # slugs start with a letter, so no tenant schema looks like this


def take_spare(conn: psycopg.Connection, target: str) -> dict[str, str] | None:
    """Rename a current spare to `target` in one transaction; None when there is none."""
    table = sql.Identifier(SpareSchema._meta.db_table)
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "DELETE FROM {t} WHERE id = (SELECT id FROM {t} WHERE fingerprint = {current}"
                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING name, revisions"
            ).format(t=table, current=sql.SQL(_current_fingerprint_sql(conn))),
        ).fetchone()
        if row is None:
            return None
        name, revisions = row
        assert target.startswith("t_"), target
        assert name.startswith(SPARE_PREFIX), name
        conn.execute(
            sql.SQL(
                "DROP SCHEMA IF EXISTS {target} CASCADE; ALTER SCHEMA {spare} RENAME TO {target}"
            ).format(target=sql.Identifier(target), spare=sql.Identifier(name))
        )
    return dict(revisions)


def _current_fingerprint_sql(conn: psycopg.Connection) -> str:
    return fingerprint_sql(conn, TEMPLATE_SCHEMA)


def refill_spares(count: int | None = None) -> int:
    """Drop spares of an old template revision and clone until `count` current ones wait."""
    wanted = settings.SPARE_SCHEMAS if count is None else count
    made = 0
    with owner_connection(autocommit=True) as conn:
        current = conn.execute(sql.SQL("SELECT " + _current_fingerprint_sql(conn))).fetchone()
        assert current is not None
        for spare in SpareSchema.objects.exclude(fingerprint=current[0]):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(spare.name))
            )
            spare.delete()
        ready = SpareSchema.objects.filter(fingerprint=current[0]).count()
        for _ in range(max(0, wanted - ready)):
            name = f"{SPARE_PREFIX}{secrets.token_hex(6)}"
            revisions = clone_schema(conn, name, grant_to=app_role_name(), source=TEMPLATE_SCHEMA)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, fingerprint, revisions, created_at) VALUES (%s, %s, %s, now())"
                ).format(sql.Identifier(SpareSchema._meta.db_table)),
                (name, fingerprint_of(revisions), Jsonb(revisions)),
            )
            made += 1
    return made


def drop_spares() -> int:
    """Drop every spare (their schemas and their rows)."""
    dropped = 0
    with owner_connection(autocommit=True) as conn:
        for spare in SpareSchema.objects.all():
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(spare.name))
            )
            spare.delete()
            dropped += 1
    return dropped
