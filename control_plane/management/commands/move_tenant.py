"""`manage.py move_tenant SLUG --to schema|rls`: move a tenant's data between placements."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.models import Isolation, Tenant
from tenants.moving import MoveRefused, move_tenant


class Command(BaseCommand):
    help = "Copy a tenant's rows (history included) to the other placement, switch, then clean up."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--to", required=True, choices=Isolation.values)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).exclude(schema_name="public").first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        try:
            report = move_tenant(tenant, options["to"])
        except MoveRefused as exc:
            raise CommandError(
                f"{exc.detail} The tenant stays in {tenant.isolation} mode."
            ) from exc
        rows = ", ".join(f"{table} {count}" for table, count in report.rows.items())
        self.stdout.write(
            f"moved {report.tenant} from {report.source} to {report.target} in {report.seconds}s"
        )
        self.stdout.write(f"rows: {rows}")
        if not report.source_removed:
            self.stdout.write(
                self.style.WARNING(f"a write reached {report.source} after the switch; it was kept")
            )
