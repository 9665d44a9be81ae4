"""Diagnostic tasks of the control plane."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import connection

from control_plane.onboarding import provision_onboarding
from tenants.models import Tenant
from tenants.moving import move_tenant


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


@shared_task(name="control_plane.tasks.move_tenant")
def move_tenant_task(tenant_id: int, to: str) -> dict[str, object]:
    """Move one tenant between placements in a worker (large tenants take a while)."""
    report = move_tenant(Tenant.objects.get(pk=tenant_id), to)
    return {"tenant": report.tenant, "rows": report.rows, "seconds": report.seconds}
