"""Settings of the benchmark's django-tenants half: the platform's settings plus the benchmark app.

Django's default connection is the owner role of the database in MIGRATION_DATABASE_URL, because
django-tenants' `TenantMixin.save()` creates the schema and runs the migrations on it.
Used only by `tests.benchmarks.djt_half` (see `tests.benchmarks.bench_onboarding`).
"""

from __future__ import annotations

import environ

from control_plane.settings import *  # noqa: F403
from control_plane.settings import MIGRATION_DATABASE_URL, SHARED_APPS, TENANT_APPS

BENCH_APP = "tests.benchmarks.bench_taskflow"

_owner = environ.Env.db_url_config(MIGRATION_DATABASE_URL)
DATABASES = {
    "default": {
        **_owner,
        "ENGINE": "django_tenants.postgresql_backend",
        "CONN_MAX_AGE": 60,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
}
TENANT_APPS = [*TENANT_APPS, BENCH_APP]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
