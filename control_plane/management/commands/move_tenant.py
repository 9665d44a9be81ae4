"""`manage.py move_tenant SLUG --to schema|rls`: move a tenant's data between placements.

The move is recorded (a TenantMove, visible in the admin) and runs in this process; a refused
move is recorded failed with its reason, and the command exits non-zero with it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.tenancy.models import MoveStatus
from control_plane.tenancy.moves import MoveInProgress, request_move, run_move
from tenants.models import Isolation, Tenant


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
            move = request_move(tenant, options["to"], via="cli", send=False)
        except MoveInProgress as exc:
            raise CommandError(exc.detail) from exc
        if move.status == MoveStatus.QUEUED:
            move = run_move(move.pk)
        if move.status != MoveStatus.DONE:
            raise CommandError(
                f"move {move.pk} {move.status}: {move.error} The tenant stays in {move.source} mode."
            )
        rows = ", ".join(f"{table} {count}" for table, count in move.rows.items())
        self.stdout.write(
            f"moved {tenant.slug} from {move.source} to {move.target} in {move.seconds}s"
            f" (move {move.pk})"
        )
        self.stdout.write(f"rows: {rows}")
        if move.error:
            self.stdout.write(self.style.WARNING(move.error))
