"""The tests' superuser connection reaches the configured server and no other."""

from __future__ import annotations

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.processes import free_port
from tests.superuser import superuser_connection


@pytest.mark.django_db
def test_superuser_connection_reaches_the_server_django_uses() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        (django_port,) = cursor.fetchone()
    with superuser_connection() as conn:
        (port,) = conn.execute("SELECT inet_server_port()").fetchone() or (None,)
    assert port == django_port == int(settings.DATABASES["default"]["PORT"] or 5432)


def test_superuser_connection_follows_a_non_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured for a port nothing listens on, it fails instead of reaching the default one."""
    monkeypatch.setitem(settings.DATABASES["default"], "PORT", str(free_port()))
    with pytest.raises(psycopg.OperationalError):
        superuser_connection().close()
