"""The diagnostic task every worker runs: proves a worker end to end (broker, process, database)."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import connection

from control_plane.worker import (
    connections,  # noqa: F401 - connects the task signal handlers
    recovery,
)


# The name it had before the control plane was grouped by domain: callers send it by this name.
@shared_task(name="control_plane.tasks.ping", acks_late=False)
def ping(payload: str) -> dict[str, str | int]:
    """Echo `payload` with where it ran, the database role it ran as and its connection's backend:
    proves a worker end to end."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, pg_backend_pid()")
        role, backend = cursor.fetchone()
    return {
        "payload": payload,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "role": role,
        "backend_pid": backend,
    }


@shared_task(name="control_plane.worker.recover_stranded_jobs", acks_late=False)
def recover_stranded_jobs() -> list[tuple[str, int]]:
    """Beat: send again every job whose message was lost or whose worker died
    (control_plane.worker.recovery). The kinds are those the worker's task modules register."""
    return recovery.recover()
