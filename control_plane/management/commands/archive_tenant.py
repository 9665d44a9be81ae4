"""`manage.py archive_tenant SLUG --reason TEXT`: stop serving a tenant, keeping its data.

An archived tenant can be activated again, or purged for good with `purge_tenant`.
"""

from __future__ import annotations

from control_plane.tenancy.status_command import StatusCommand
from tenants.models import TenantStatus


class Command(StatusCommand):
    help = "Archive a tenant: no longer served; its data stays until purge_tenant drops it."
    target = TenantStatus.ARCHIVED
    done = "archived"
