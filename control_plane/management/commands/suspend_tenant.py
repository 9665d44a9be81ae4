"""`manage.py suspend_tenant SLUG --reason TEXT`: suspend a tenant (its API answers 403)."""

from __future__ import annotations

from control_plane.tenancy.status_command import StatusCommand
from tenants.models import TenantStatus


class Command(StatusCommand):
    help = "Suspend a tenant with a reason, recorded and shown in the admin; activate it in the admin or the API."
    target = TenantStatus.SUSPENDED
    done = "suspended"
    reason_required = True
