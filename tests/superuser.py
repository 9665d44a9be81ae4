"""A superuser connection to the PostgreSQL server the tests are configured for, for what the app
role may not do (terminating a backend, say).

Host and port come from Django's database settings, never libpq's defaults: another cluster on
the same machine (the default port while the tests use another) is never touched.
"""

from __future__ import annotations

import os

import psycopg
from django.conf import settings


def superuser_connection(dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection as PGSUPERUSER (default postgres) to the configured server."""
    database = settings.DATABASES["default"]
    return psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=int(database["PORT"] or 5432),
        user=os.environ.get("PGSUPERUSER", "postgres"),
        dbname=dbname,
        autocommit=True,
    )
