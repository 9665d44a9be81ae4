"""The one shape of the CLI's status commands (archive_tenant, suspend_tenant): the same service
as the admin and the operator API, a one-line message and a non-zero exit when it is refused."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.tenancy.lifecycle import LifecycleConflict, set_tenant_status
from tenants.models import Tenant


class StatusCommand(BaseCommand):
    target: str = ""
    done: str = ""
    reason_required = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--reason",
            required=self.reason_required,
            default="",
            help="Why; recorded on the tenant and shown with its status.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["slug"]
        tenant = Tenant.objects.filter(slug=slug).exclude(schema_name="public").first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}")
        try:
            set_tenant_status(tenant, self.target, reason=options["reason"])
        except LifecycleConflict as exc:
            raise CommandError(exc.detail) from exc
        reason = f" ({tenant.status_reason})" if tenant.status_reason else ""
        self.stdout.write(f"{self.done} tenant {slug}{reason}")
