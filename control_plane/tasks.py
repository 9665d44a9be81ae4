"""Diagnostic tasks of the control plane."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import connection


@shared_task(name="control_plane.tasks.ping", acks_late=False)
def ping(payload: str) -> dict[str, str | int]:
    """Echo `payload` with where it ran and the database role it ran as: proves a worker end to end."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (role,) = cursor.fetchone()
    return {"payload": payload, "hostname": socket.gethostname(), "pid": os.getpid(), "role": role}
