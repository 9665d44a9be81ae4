"""Diagnostic tasks of the control plane."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import connection

from control_plane.onboarding import provision_onboarding


@shared_task(name="control_plane.tasks.ping", acks_late=False)
def ping(payload: str) -> dict[str, str | int]:
    """Echo `payload` with where it ran and the database role it ran as: proves a worker end to end."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (role,) = cursor.fetchone()
    return {"payload": payload, "hostname": socket.gethostname(), "pid": os.getpid(), "role": role}


@shared_task(name="control_plane.tasks.provision_tenant")
def provision_tenant(onboarding_id: int) -> dict[str, object]:
    """Provision one onboarding request; a redelivered message makes the same tenant again."""
    onboarding = provision_onboarding(onboarding_id)
    return {"tenant": onboarding.tenant.slug, "ms": onboarding.provisioning_ms}
