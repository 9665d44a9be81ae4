"""A worker keeps its Django connection between tasks, as a web process does between requests.

Celery's Django fixup closes every connection before and after each task unless
CELERY_DB_REUSE_MAX is set, so each task would open a new one (about 9 ms of a 6 ms onboarding
here). With reuse on (settings), these handlers do what Django does around a request instead:
close_old_connections() drops a connection past CONN_MAX_AGE or one that failed (and with
CONN_HEALTH_CHECKS a reused one is checked first), and the connection goes back to the public
schema, so no task inherits the tenant the previous one left django-tenants on.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections, connection


@task_prerun.connect
def before_task(**_: Any) -> None:
    close_old_connections()
    connection.set_schema_to_public()  # type: ignore[attr-defined]  # django-tenants' wrapper


@task_postrun.connect
def after_task(**_: Any) -> None:
    close_old_connections()
