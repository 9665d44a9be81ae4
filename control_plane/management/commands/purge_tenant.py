"""`manage.py purge_tenant SLUG --confirm SLUG`: delete an archived tenant's data for good."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.tenancy.lifecycle import LifecycleConflict, purge_tenant
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Drop an archived tenant's schema (or shared rows) and its control-plane rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--confirm", required=True, help="The slug again, to confirm.")

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["slug"]
        if options["confirm"] != slug:
            raise CommandError(f"--confirm must repeat the slug {slug!r}; nothing was purged")
        tenant = Tenant.objects.filter(slug=slug).exclude(schema_name="public").first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}")
        try:
            report = purge_tenant(tenant)
        except LifecycleConflict as exc:
            raise CommandError(f"{exc} Nothing was purged.") from exc
        self.stdout.write(f"purged tenant {slug}")
        self.stdout.write(f"dropped {report.placement}")
        rows = ", ".join(f"{table} {count:,}" for table, count in report.rows.items() if count)
        self.stdout.write(f"tenant rows: {rows or 'none'}")
        public = ", ".join(f"{label} {count}" for label, count in report.public_rows.items())
        self.stdout.write(f"control-plane rows: {public}")
