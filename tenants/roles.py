"""The two database roles: the app role serves requests, the owner role changes schemas.

Web and workers hold Django's default connection as the app role (DATABASE_URL). Code that must
run DDL (migrations, provisioning) asks for the owner here and never hands it to request code.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import environ
import psycopg
from django.conf import settings
from django.db import connections


def app_role_name() -> str:
    return urlsplit(settings.DATABASE_URL).username or ""


def owner_role_name() -> str:
    return urlsplit(settings.MIGRATION_DATABASE_URL).username or ""


def owner_connection(*, autocommit: bool = False) -> psycopg.Connection:
    """A new psycopg connection as the owner role, for DDL."""
    url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    return psycopg.connect(url, autocommit=autocommit)


def use_owner_role_for_django() -> None:
    """Point this process's Django connection at the owner role (management commands that migrate)."""
    owner = environ.Env.db_url_config(settings.MIGRATION_DATABASE_URL)
    connection = connections["default"]
    connection.close()
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        connection.settings_dict[key] = owner[key]
